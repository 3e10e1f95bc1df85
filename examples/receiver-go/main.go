// A webhook receiver for ivrgate in Go (1.19 or later), standard library only. The same
// behaviour and interface as examples/receiver.py:
//
//	go run examples/receiver-go/main.go [--listen HOST:PORT]   # default 127.0.0.1:9000
//	go run examples/receiver-go/main.go verify ID TIMESTAMP SIGNATURES < body
//
// The secret is WEBHOOK_SECRET (default: the webhook_secret of config/minimal.toml). Every
// request is checked as Standard Webhooks says: the signature over `{id}.{timestamp}.{body}`
// (any of the space-separated `v1,` signatures may match; lengths first, then a constant-time
// compare) and a webhook-timestamp at most 5 minutes from this machine's clock. A webhook-id
// already processed is answered 2xx again (a decision with the same answer) and not processed
// twice. `verify` checks one signature without the timestamp tolerance (for test vectors).
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	defaultSecret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
	defaultListen = "127.0.0.1:9000"
	toleranceS    = 5 * 60
	rememberedIDs = 10000
	maxBody       = 1024 * 1024
)

var key []byte

func fail(message string) {
	fmt.Fprintln(os.Stderr, "receiver: "+message)
	os.Exit(2)
}

func keyOf(secret string) []byte {
	if !strings.HasPrefix(secret, "whsec_") {
		fail("WEBHOOK_SECRET must start with whsec_")
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		fail("WEBHOOK_SECRET is not base64 after whsec_: " + err.Error())
	}
	if len(k) == 0 {
		fail("WEBHOOK_SECRET holds no key after whsec_")
	}
	return k
}

// signatureMatches says whether any of the space-separated signatures is ours.
func signatureMatches(id, timestamp string, body []byte, header string) bool {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + timestamp + "."))
	mac.Write(body)
	expected := []byte("v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	matched := false
	for _, candidate := range strings.Split(header, " ") {
		given := []byte(candidate)
		// ConstantTimeCompare is constant-time for equal lengths; a bare "v1," never matches.
		if len(given) == len(expected) && subtle.ConstantTimeCompare(given, expected) == 1 {
			matched = true
		}
	}
	return matched
}

// decide answers a decision with a valid action for each Voicenter decision point.
func decide(kind string) map[string]any {
	switch kind {
	case "ivr_action":
		return map[string]any{"action": "menu", "prompt": "welcome", "menu": "main",
			"max_digits": 1, "attach": map[string]string{"crm_id": "A-17"}}
	case "layer_input":
		return map[string]any{"action": "goto", "target": "1",
			"attach": map[string]string{"crm_id": "A-17"}}
	case "caller_lookup":
		return map[string]any{"action": "lookup_result", "found": true, "name": "Demo Caller",
			"url": "https://crm.example/c/A-17"}
	default:
		return map[string]any{"action": "default"}
	}
}

// processed maps a webhook-id to the answer already given; oldest forgotten first.
type seen struct {
	sync.Mutex
	answers map[string][]byte
	order   []string
}

var processed = seen{answers: map[string][]byte{}}

func reply(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("content-type", "application/json")
	w.Header().Set("content-length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

func refuse(w http.ResponseWriter, status int, id, why, errorText string) {
	if id == "" {
		id = "-"
	}
	fmt.Printf("refused id=%s: %s\n", id, why)
	out, _ := json.Marshal(map[string]string{"error": errorText})
	reply(w, status, out)
}

func handle(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		out, _ := json.Marshal(map[string]string{"error": "POST only"})
		reply(w, http.StatusMethodNotAllowed, out)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		refuse(w, http.StatusRequestEntityTooLarge, r.Header.Get("webhook-id"), "body too large or unreadable", "body too large")
		return
	}
	id := r.Header.Get("webhook-id")
	timestamp := r.Header.Get("webhook-timestamp")
	signatures := r.Header.Get("webhook-signature")
	if id == "" || timestamp == "" || signatures == "" {
		refuse(w, http.StatusBadRequest, id, "missing webhook-id, webhook-timestamp or webhook-signature", "missing Standard Webhooks headers")
		return
	}
	if !signatureMatches(id, timestamp, body, signatures) {
		refuse(w, http.StatusUnauthorized, id, "signature=BAD", "bad signature")
		return
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	age := time.Now().Unix() - ts
	if err != nil || age > toleranceS || age < -toleranceS {
		refuse(w, http.StatusUnauthorized, id, fmt.Sprintf("webhook-timestamp %s is more than %d s from now", timestamp, toleranceS), "timestamp outside tolerance")
		return
	}
	processed.Lock()
	defer processed.Unlock()
	if answer, ok := processed.answers[id]; ok {
		fmt.Printf("duplicate id=%s: already processed, answered again\n", id)
		reply(w, http.StatusOK, answer)
		return
	}
	var payload struct {
		Type *string         `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &payload); err != nil || payload.Type == nil {
		refuse(w, http.StatusBadRequest, id, "body is not a webhook payload", "body is not a webhook payload")
		return
	}
	fmt.Printf("%s  id=%s  signature=ok\n", *payload.Type, id)
	var pretty bytes.Buffer
	if json.Indent(&pretty, payload.Data, "", "  ") == nil {
		fmt.Println(pretty.String())
	}
	answer := []byte("{}")
	if strings.HasPrefix(*payload.Type, "decision.") {
		var data struct {
			Kind string `json:"kind"`
		}
		json.Unmarshal(payload.Data, &data)
		answer, _ = json.Marshal(decide(data.Kind))
	}
	processed.answers[id] = answer
	processed.order = append(processed.order, id)
	if len(processed.order) > rememberedIDs {
		delete(processed.answers, processed.order[0])
		processed.order = processed.order[1:]
	}
	reply(w, http.StatusOK, answer)
}

func main() {
	secret := os.Getenv("WEBHOOK_SECRET")
	ownSecret := secret != ""
	if !ownSecret {
		secret = defaultSecret
	}
	key = keyOf(secret)
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "verify" {
		if len(args) != 4 {
			fail("usage: main.go verify ID TIMESTAMP SIGNATURES < body")
		}
		body, err := io.ReadAll(os.Stdin)
		if err != nil {
			fail("reading the body: " + err.Error())
		}
		if signatureMatches(args[1], args[2], body, args[3]) {
			fmt.Println("ok")
			os.Exit(0)
		}
		fmt.Println("bad")
		os.Exit(1)
	}
	listen := defaultListen
	for i := 0; i < len(args); i++ {
		if args[i] == "--listen" && i+1 < len(args) {
			i++
			listen = args[i]
		} else {
			fail("unknown argument " + args[i] + "; usage: main.go [--listen HOST:PORT]")
		}
	}
	if _, _, err := net.SplitHostPort(listen); err != nil {
		fail("--listen " + listen + " is not HOST:PORT")
	}
	listener, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cannot listen on %s: %v (is another receiver still running?)\n", listen, errors.Unwrap(err))
		os.Exit(1)
	}
	where := ""
	if listen == defaultListen {
		where = " (the webhook_url of config/minimal.toml)"
	}
	which := "its webhook_secret"
	if ownSecret {
		which = "WEBHOOK_SECRET"
	}
	fmt.Printf("listening on http://%s/hooks%s, verifying with %s; Ctrl-C stops\n", listen, where, which)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt)
	go func() {
		<-stop
		fmt.Println("stopped")
		os.Exit(0)
	}()
	server := &http.Server{Handler: http.HandlerFunc(handle), ReadHeaderTimeout: 10 * time.Second}
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, "receiver:", err)
		os.Exit(1)
	}
}

// A webhook receiver for ivrgate in Java 17, standard library only (com.sun.net.httpserver,
// javax.crypto). The same behaviour and interface as examples/receiver.py:
//
//   java examples/receiver-java/Receiver.java [--listen HOST:PORT]   # default 127.0.0.1:9000
//   java examples/receiver-java/Receiver.java verify ID TIMESTAMP SIGNATURES < body
//
// The secret is WEBHOOK_SECRET (default: the webhook_secret of config/minimal.toml). Every
// request is checked as Standard Webhooks says: the signature over `{id}.{timestamp}.{body}`
// (any of the space-separated `v1,` signatures may match; lengths first, then a constant-time
// compare) and a webhook-timestamp at most 5 minutes from this machine's clock. A webhook-id
// already processed is answered 2xx again (a decision with the same answer) and not processed
// twice. `verify` checks one signature without the timestamp tolerance (for test vectors).
//
// Without a JSON library in the JDK, the payload is read only as far as the answer needs it
// (`type` and `data.kind`, both plain strings) and printed as received.

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.BindException;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.Executors;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

public class Receiver {
    static final String DEFAULT_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    static final String DEFAULT_LISTEN = "127.0.0.1:9000";
    static final long TOLERANCE_S = 5 * 60;
    static final int REMEMBERED_IDS = 10000;
    static final int MAX_BODY = 1024 * 1024;

    static byte[] key;
    // webhook-id -> the answer body already given; oldest forgotten first.
    static final Map<String, String> processed = new LinkedHashMap<>() {
        @Override
        protected boolean removeEldestEntry(Map.Entry<String, String> eldest) {
            return size() > REMEMBERED_IDS;
        }
    };

    static void fail(String message) {
        System.err.println("receiver: " + message);
        System.exit(2);
    }

    static byte[] keyOf(String secret) {
        if (!secret.startsWith("whsec_")) fail("WEBHOOK_SECRET must start with whsec_");
        byte[] k = new byte[0];
        try {
            k = Base64.getDecoder().decode(secret.substring("whsec_".length()));
        } catch (IllegalArgumentException e) {
            fail("WEBHOOK_SECRET is not base64 after whsec_: " + e.getMessage());
        }
        if (k.length == 0) fail("WEBHOOK_SECRET holds no key after whsec_");
        return k;
    }

    /** Whether any of the space-separated signatures is ours for (id, timestamp, body). */
    static boolean signatureMatches(String id, String timestamp, byte[] body, String header) {
        byte[] expected;
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(key, "HmacSHA256"));
            mac.update((id + "." + timestamp + ".").getBytes(StandardCharsets.UTF_8));
            expected = ("v1," + Base64.getEncoder().encodeToString(mac.doFinal(body)))
                    .getBytes(StandardCharsets.US_ASCII);
        } catch (java.security.GeneralSecurityException e) {
            throw new IllegalStateException("HmacSHA256 unavailable", e);
        }
        boolean any = false;
        for (String candidate : header.split(" ")) {
            byte[] given = candidate.getBytes(StandardCharsets.UTF_8);
            // MessageDigest.isEqual is constant-time for equal lengths; a bare "v1," never matches.
            if (given.length == expected.length && MessageDigest.isEqual(given, expected)) any = true;
        }
        return any;
    }

    /** A top-level string field of a JSON object (enough for `type` and `kind`). */
    static String stringField(String json, String name) {
        Matcher m = Pattern.compile("\"" + name + "\"\\s*:\\s*\"((?:[^\"\\\\]|\\\\.)*)\"").matcher(json);
        return m.find() ? m.group(1) : null;
    }

    /** The answer to a decision: a valid action for each Voicenter decision point. */
    static String decide(String kind) {
        if (kind == null) kind = "";
        switch (kind) {
            case "ivr_action":
                return "{\"action\":\"menu\",\"prompt\":\"welcome\",\"menu\":\"main\",\"max_digits\":1,"
                        + "\"attach\":{\"crm_id\":\"A-17\"}}";
            case "layer_input":
                return "{\"action\":\"goto\",\"target\":\"1\",\"attach\":{\"crm_id\":\"A-17\"}}";
            case "caller_lookup":
                return "{\"action\":\"lookup_result\",\"found\":true,\"name\":\"Demo Caller\","
                        + "\"url\":\"https://crm.example/c/A-17\"}";
            default:
                return "{\"action\":\"default\"}";
        }
    }

    static void reply(HttpExchange exchange, int status, String body) throws IOException {
        byte[] out = body.getBytes(StandardCharsets.UTF_8);
        exchange.getResponseHeaders().set("content-type", "application/json");
        exchange.sendResponseHeaders(status, out.length);
        System.out.flush();
        try (OutputStream os = exchange.getResponseBody()) {
            os.write(out);
        }
    }

    static void handle(HttpExchange exchange) throws IOException {
        if (!exchange.getRequestMethod().equals("POST")) {
            reply(exchange, 405, "{\"error\":\"POST only\"}");
            return;
        }
        byte[] body;
        try (InputStream in = exchange.getRequestBody()) {
            body = in.readNBytes(MAX_BODY + 1);
        }
        if (body.length > MAX_BODY) {
            reply(exchange, 413, "{\"error\":\"body too large\"}");
            return;
        }
        String id = exchange.getRequestHeaders().getFirst("webhook-id");
        String timestamp = exchange.getRequestHeaders().getFirst("webhook-timestamp");
        String signatures = exchange.getRequestHeaders().getFirst("webhook-signature");
        if (id == null || timestamp == null || signatures == null) {
            System.out.println("refused id=" + (id == null || id.isEmpty() ? "-" : id)
                    + ": missing webhook-id, webhook-timestamp or webhook-signature");
            reply(exchange, 400, "{\"error\":\"missing Standard Webhooks headers\"}");
            return;
        }
        if (!signatureMatches(id, timestamp, body, signatures)) {
            System.out.println("refused id=" + id + ": signature=BAD");
            reply(exchange, 401, "{\"error\":\"bad signature\"}");
            return;
        }
        long now = System.currentTimeMillis() / 1000;
        if (!timestamp.matches("\\d{1,18}") || Math.abs(now - Long.parseLong(timestamp)) > TOLERANCE_S) {
            System.out.println("refused id=" + id + ": webhook-timestamp " + timestamp
                    + " is more than " + TOLERANCE_S + " s from now");
            reply(exchange, 401, "{\"error\":\"timestamp outside tolerance\"}");
            return;
        }
        String answer;
        synchronized (processed) {
            answer = processed.get(id);
            if (answer == null) {
                String json = new String(body, StandardCharsets.UTF_8);
                String type = stringField(json, "type");
                if (type == null) {
                    System.out.println("refused id=" + id + ": body has no \"type\"");
                    reply(exchange, 400, "{\"error\":\"body is not a webhook payload\"}");
                    return;
                }
                System.out.println(type + "  id=" + id + "  signature=ok");
                System.out.println(json);
                answer = type.startsWith("decision.") ? decide(stringField(json, "kind")) : "{}";
                processed.put(id, answer);
            } else {
                System.out.println("duplicate id=" + id + ": already processed, answered again");
            }
        }
        reply(exchange, 200, answer);
    }

    public static void main(String[] args) throws IOException {
        String secret = System.getenv("WEBHOOK_SECRET");
        boolean ownSecret = secret != null && !secret.isEmpty();
        key = keyOf(ownSecret ? secret : DEFAULT_SECRET);

        if (args.length > 0 && args[0].equals("verify")) {
            if (args.length != 4) fail("usage: Receiver.java verify ID TIMESTAMP SIGNATURES < body");
            boolean ok = signatureMatches(args[1], args[2], System.in.readAllBytes(), args[3]);
            System.out.println(ok ? "ok" : "bad");
            System.exit(ok ? 0 : 1);
        }
        String listen = DEFAULT_LISTEN;
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--listen") && i + 1 < args.length) listen = args[++i];
            else fail("unknown argument " + args[i] + "; usage: Receiver.java [--listen HOST:PORT]");
        }
        int colon = listen.lastIndexOf(':');
        int port = -1;
        try {
            port = Integer.parseInt(listen.substring(colon + 1));
        } catch (NumberFormatException e) {
            // reported below
        }
        if (colon < 1 || port < 0 || port > 65535) fail("--listen " + listen + " is not HOST:PORT");
        String host = listen.substring(0, colon).replaceAll("^\\[|\\]$", "");

        HttpServer server;
        try {
            server = HttpServer.create(new InetSocketAddress(host, port), 64);
        } catch (BindException e) {
            System.err.println("cannot listen on " + listen + ": " + e.getMessage()
                    + " (is another receiver still running?)");
            System.exit(1);
            return;
        }
        server.createContext("/", exchange -> {
            try {
                handle(exchange);
            } finally {
                exchange.close();
            }
        });
        server.setExecutor(Executors.newFixedThreadPool(4));
        server.start();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> System.out.println("stopped")));
        String where = listen.equals(DEFAULT_LISTEN) ? " (the webhook_url of config/minimal.toml)" : "";
        System.out.println("listening on http://" + listen + "/hooks" + where + ", verifying with "
                + (ownSecret ? "WEBHOOK_SECRET" : "its webhook_secret") + "; Ctrl-C stops");
        System.out.flush();
    }
}

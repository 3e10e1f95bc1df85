#![allow(clippy::unwrap_used)]

use std::borrow::Cow;

use super::*;

const API: &str = "http://www.aspect.com/unifiedip/edk/ctipsapi/2009/08";
const PUB: &str = "http://www.aspect.com/unifiedip/edk/clientpublishapi/2009/08";
const CD: &str = "http://www.aspect.com/unifiedip/edk/commondata/2009/08";

fn open_connection() -> String {
    let mut b = Builder::new();
    b.start_with("args", &[("xmlns:a", API), ("xmlns:i", XSI_NS)])
        .array("a:TenantIds", ARRAYS_NS, "int", ["1", "7"])
        .start_with("a:UserCredentials", &[("xmlns:b", CD)])
        .leaf("b:UserName", "ivr")
        .leaf("b:Password", "p&<\"'>")
        .end()
        .leaf("a:ClientCallbackURL", "http://gw:8080/ctips/acme/t0k/3")
        .end();
    write_request("OpenConnection", API, b)
}

#[test]
fn open_connection_request_is_golden() {
    let golden = concat!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>"#,
        r#"<OpenConnection xmlns="http://www.aspect.com/unifiedip/edk/ctipsapi/2009/08">"#,
        r#"<args xmlns:a="http://www.aspect.com/unifiedip/edk/ctipsapi/2009/08" "#,
        r#"xmlns:i="http://www.w3.org/2001/XMLSchema-instance">"#,
        r#"<a:TenantIds xmlns:b="http://schemas.microsoft.com/2003/10/Serialization/Arrays">"#,
        r#"<b:int>1</b:int><b:int>7</b:int></a:TenantIds>"#,
        r#"<a:UserCredentials xmlns:b="http://www.aspect.com/unifiedip/edk/commondata/2009/08">"#,
        r#"<b:UserName>ivr</b:UserName><b:Password>p&amp;&lt;&quot;&apos;&gt;</b:Password>"#,
        r#"</a:UserCredentials>"#,
        r#"<a:ClientCallbackURL>http://gw:8080/ctips/acme/t0k/3</a:ClientCallbackURL>"#,
        r#"</args></OpenConnection></s:Body></s:Envelope>"#
    );
    assert_eq!(open_connection(), golden);
    assert_eq!(
        soap_action(&format!("{API}/RegistrationService/OpenConnection")),
        "\"http://www.aspect.com/unifiedip/edk/ctipsapi/2009/08/RegistrationService/OpenConnection\""
    );
}

#[test]
fn a_written_request_reads_back_with_namespaces_resolved() {
    let xml = open_connection();
    let request = read_request(parse(&xml, &Limits::default()).unwrap(), None).unwrap();
    assert_eq!(request.version, Version::V11);
    let op = &request.operation;
    assert_eq!(
        (op.name.as_ref(), op.namespace.as_deref()),
        ("OpenConnection", Some(API))
    );
    let args = op.child("args").unwrap();
    assert_eq!(
        args.namespace.as_deref(),
        Some(API),
        "default namespace inherited"
    );
    let tenants = args.child_ns(API, "TenantIds").unwrap();
    let ints: Vec<_> = tenants
        .all("int")
        .map(|e| (e.namespace.as_deref(), e.value()))
        .collect();
    assert_eq!(ints, [(Some(ARRAYS_NS), "1"), (Some(ARRAYS_NS), "7")]);
    let creds = args.child("UserCredentials").unwrap();
    assert_eq!(creds.child_ns(CD, "Password").unwrap().value(), "p&<\"'>");
    assert!(
        args.attributes.is_empty(),
        "declarations are not attributes"
    );
}

#[test]
fn nil_optional_empty_array_and_escaping() {
    let mut b = Builder::new();
    b.start_with("args", &[("xmlns:a", API), ("xmlns:i", XSI_NS)])
        .optional("a:FirstName", None)
        .optional("a:LastName", Some("Cohen"))
        .strings("a:UserData", Vec::<String>::new())
        .leaf("a:Odd", "a\rb\u{1}c\td\u{FFFF}")
        .leaf_with("a:Attr", &[("note", "x\"<y")], "");
    let xml = write_request("Op", API, b);
    assert!(xml.contains(r#"<a:FirstName i:nil="true"/>"#), "{xml}");
    assert!(
        xml.contains(
            r#"<a:UserData xmlns:b="http://schemas.microsoft.com/2003/10/Serialization/Arrays"/>"#
        ),
        "{xml}"
    );
    let root = parse(&xml, &Limits::default()).unwrap();
    let args = read_request(root, None)
        .unwrap()
        .operation
        .children
        .remove(0);
    let first = args.child("FirstName").unwrap();
    assert!(first.is_nil());
    assert_eq!(args.child_value("FirstName"), None);
    assert_eq!(args.child_value("LastName"), Some("Cohen"));
    assert!(args.child("UserData").unwrap().children.is_empty());
    // a carriage return survives as a reference; controls XML cannot carry are left out
    assert_eq!(args.child("Odd").unwrap().text, "a\rbc\td");
    assert_eq!(args.child("Attr").unwrap().attr("note"), Some("x\"<y"));
}

#[test]
fn open_connection_answer_gives_its_result() {
    let body = format!(
        r#"<s:Envelope xmlns:s="{SOAP11_NS}"><s:Body><OpenConnectionResponse xmlns="{API}"><OpenConnectionResult xmlns:a="{API}" xmlns:i="{XSI_NS}"><a:SessionId>3f2a</a:SessionId><a:Response>success</a:Response></OpenConnectionResult></OpenConnectionResponse></s:Body></s:Envelope>"#
    );
    let result = read_response(
        body.as_bytes(),
        Some("text/xml; charset=utf-8"),
        "OpenConnection",
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(result.child_value("SessionId"), Some("3f2a"));
    assert_eq!(result.child_value("Response"), Some("success"));

    let int = write_response("RouteSelect", API, {
        let mut b = Builder::new();
        b.leaf("RouteSelectResult", "0");
        b
    });
    let result = read_response(int.as_bytes(), None, "RouteSelect", &Limits::default()).unwrap();
    assert_eq!(result.value(), "0");

    let wrong = read_response(int.as_bytes(), None, "MakeCall", &Limits::default());
    assert!(
        matches!(wrong, Err(ResponseError::Invalid(WireError::NotSoap(_)))),
        "{wrong:?}"
    );
}

/// The fault of WIRE.md, with the detail in the default namespace and with a prefix.
#[test]
fn portal_faults_are_read_in_both_forms() {
    let forms = [
        format!(
            r#"<CTIPortalServiceFault xmlns="{API}" xmlns:i="{XSI_NS}"><ErrorCode>InvalidSessionId</ErrorCode><Message>Invalid session</Message></CTIPortalServiceFault>"#
        ),
        format!(
            r#"<a:CTIPortalServiceFault xmlns:a="{API}"><a:ErrorCode>InvalidSessionId</a:ErrorCode><a:Message>Invalid session</a:Message></a:CTIPortalServiceFault>"#
        ),
    ];
    for detail in forms {
        let body = format!(
            r#"<s:Envelope xmlns:s="{SOAP11_NS}"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring xml:lang="en-US">Invalid session</faultstring><detail>{detail}</detail></s:Fault></s:Body></s:Envelope>"#
        );
        let err = read_response(body.as_bytes(), None, "OnLine", &Limits::default()).unwrap_err();
        let ResponseError::Fault(fault) = err else {
            panic!("not a fault: {err:?}");
        };
        assert_eq!(fault.code, "s:Client");
        assert_eq!(fault.code_local(), "Client");
        assert_eq!(fault.reason, "Invalid session");
        assert_eq!(
            fault.portal_service_fault(),
            Some(PortalServiceFault {
                error_code: "InvalidSessionId".into(),
                message: "Invalid session".into()
            })
        );
    }
}

#[test]
fn a_written_fault_reads_back_in_both_versions() {
    let mut detail = Builder::new();
    detail
        .start_with(
            "CTIPortalServiceFault",
            &[("xmlns", API), ("xmlns:i", XSI_NS)],
        )
        .leaf("ErrorCode", "MaxNumberClientConnections")
        .nil("Message");
    let detail = detail.finish();
    for (version, code) in [
        (Version::V11, FaultCode::Sender),
        (Version::V12, FaultCode::Receiver),
    ] {
        let xml = fault(version, code, "too many <clients>", Some(&detail));
        let err =
            read_response(xml.as_bytes(), None, "OpenConnection", &Limits::default()).unwrap_err();
        let ResponseError::Fault(f) = err else {
            panic!("not a fault: {err:?}");
        };
        assert_eq!(f.version, version);
        assert_eq!(f.reason, "too many <clients>");
        let expected = match version {
            Version::V11 => "soap:Client",
            Version::V12 => "soap:Receiver",
        };
        assert_eq!(f.code, expected);
        let p = f.portal_service_fault().unwrap();
        assert_eq!(p.error_code, "MaxNumberClientConnections");
        assert_eq!(p.message, "");
    }
    // without detail there is no portal fault
    let xml = fault(Version::V11, FaultCode::Receiver, "down", None);
    let Err(ResponseError::Fault(f)) = read_response(xml.as_bytes(), None, "X", &Limits::default())
    else {
        panic!("not a fault");
    };
    assert_eq!((f.code_local(), f.portal_service_fault()), ("Server", None));
}

#[test]
fn callback_event_exposes_type_and_nil() {
    let xml = format!(
        r#"<s:Envelope xmlns:s="{SOAP11_NS}"><s:Body><PublishCTIEvent xmlns="{PUB}"><ctiEvent i:type="a:CTIRouteRequest" xmlns:a="{PUB}" xmlns:i="{XSI_NS}"><a:EventType>RouteRequest</a:EventType><a:SipIpAddress i:nil="true"/><a:CallInfo><a:CallData xmlns:b="{CD}"><b:CTICallDataItem><b:key>k</b:key><b:value>v</b:value></b:CTICallDataItem></a:CallData></a:CallInfo></ctiEvent></PublishCTIEvent></s:Body></s:Envelope>"#
    );
    let request = read_request(parse(&xml, &Limits::default()).unwrap(), None).unwrap();
    let event = request.operation.child("ctiEvent").unwrap();
    let t = event.xsi_type.as_ref().unwrap();
    assert_eq!(
        (t.namespace.as_deref(), t.name.as_ref()),
        (Some(PUB), "CTIRouteRequest")
    );
    assert!(event.child("SipIpAddress").unwrap().is_nil());
    assert_eq!(event.child_value("SipIpAddress"), None);
    assert_eq!(event.attr_ns(XSI_NS, "type"), Some("a:CTIRouteRequest"));
    let item = event
        .child("CallInfo")
        .unwrap()
        .child("CallData")
        .unwrap()
        .child("CTICallDataItem")
        .unwrap();
    assert_eq!(item.namespace.as_deref(), Some(CD));
    assert_eq!(item.child_value("value"), Some("v"));
}

#[test]
fn envelopes_of_both_versions_and_bare_ones() {
    let v12 = r#"<soap12:Envelope xmlns:soap12="http://www.w3.org/2003/05/soap-envelope"><soap12:Header><h/></soap12:Header><soap12:Body><AddInteraction><data><Tenant>VHTLab</Tenant></data></AddInteraction></soap12:Body></soap12:Envelope>"#;
    let r = read_request(parse(v12, &Limits::default()).unwrap(), None).unwrap();
    assert_eq!(r.version, Version::V12);
    assert!(r.header.is_some());
    assert_eq!(r.operation.name, "AddInteraction");
    let none = r#"<Envelope><Body><Op/></Body></Envelope>"#;
    let r = read_request(
        parse(none, &Limits::default()).unwrap(),
        Some("application/soap+xml"),
    )
    .unwrap();
    assert_eq!(r.version, Version::V12, "announced by the content type");
    for (bad, why) in [
        (
            r#"<e:Envelope xmlns:e="urn:other"><e:Body><Op/></e:Body></e:Envelope>"#,
            "namespace",
        ),
        (r#"<Envelope><Header/></Envelope>"#, "no Body"),
        (r#"<Envelope><Body>  </Body></Envelope>"#, "no operation"),
        (r#"<Op/>"#, "not an Envelope"),
    ] {
        let got = read_request(parse(bad, &Limits::default()).unwrap(), None);
        assert!(matches!(got, Err(WireError::NotSoap(_))), "{why}: {got:?}");
    }
}

#[test]
fn doctype_and_entities_are_refused() {
    for bad in [
        "<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>",
        "<?xml version=\"1.0\"?>\n<!doctype x SYSTEM \"file:///etc/passwd\"><x/>",
        "<x><!ENTITY a 'b'></x>",
    ] {
        assert_eq!(
            parse(bad, &Limits::default()),
            Err(WireError::DoctypeRefused),
            "{bad}"
        );
    }
    assert!(matches!(
        parse("<x>&bogus;</x>", &Limits::default()),
        Err(WireError::MalformedXml(_))
    ));
    assert!(matches!(
        parse("<x a='&bogus;'>&#0;</x>", &Limits::default()),
        Err(WireError::MalformedXml(_))
    ));
}

#[test]
fn depth_bombs_and_element_floods_are_refused() {
    let bomb = "<a>".repeat(100_000) + &"</a>".repeat(100_000);
    let limits = Limits {
        max_bytes: bomb.len(),
        ..Limits::default()
    };
    assert_eq!(parse(&bomb, &limits), Err(WireError::TooDeep { limit: 32 }));
    let limits = Limits {
        max_depth: 10_000,
        max_bytes: bomb.len(),
        ..Limits::default()
    };
    assert_eq!(
        parse(&bomb, &limits),
        Err(WireError::TooDeep { limit: 128 }),
        "capped at 128"
    );
    let empty_bomb = "<a>".repeat(31) + "<b/>" + &"</a>".repeat(31);
    assert_eq!(parse(&empty_bomb, &Limits::default()).unwrap().depth(), 32);
    let too_deep = "<a>".repeat(32) + "<b/>" + &"</a>".repeat(32);
    assert!(parse(&too_deep, &Limits::default()).is_err());

    let flood = format!("<r>{}</r>", "<e/>".repeat(1000));
    let limits = Limits {
        max_elements: 1000,
        ..Limits::default()
    };
    assert_eq!(
        parse(&flood, &limits),
        Err(WireError::TooManyElements { limit: 1000 })
    );
    let limits = Limits {
        max_elements: 1001,
        ..Limits::default()
    };
    assert_eq!(parse(&flood, &limits).unwrap().count(), 1001);
    let limits = Limits {
        max_bytes: 100,
        ..Limits::default()
    };
    assert!(matches!(
        parse(&flood, &limits),
        Err(WireError::TooLarge { .. })
    ));
    assert!(matches!(
        decode(flood.as_bytes(), None, &limits),
        Err(WireError::TooLarge { .. })
    ));
}

#[test]
fn namespaces_stay_shared_and_bounded() {
    // an escaped namespace name is taken as written and borrowed, never copied per element
    let xml = format!("<r xmlns=\"urn:a&amp;b\">{}</r>", "<e/>".repeat(100));
    let root = parse(&xml, &Limits::default()).unwrap();
    assert!(root
        .children
        .iter()
        .all(|e| matches!(e.namespace, Some(Cow::Borrowed("urn:a&amp;b")))));
    // undeclaring the default namespace
    let root = parse("<r xmlns='urn:a'><e xmlns=''/></r>", &Limits::default()).unwrap();
    assert_eq!(root.children[0].namespace, None);
    let decls: String = (0..300).map(|i| format!(" xmlns:p{i}='urn:{i}'")).collect();
    let xml = format!("<r{decls}><e/></r>");
    assert!(matches!(
        parse(&xml, &Limits::default()),
        Err(WireError::MalformedXml(_))
    ));
}

#[test]
fn malformed_documents_are_errors() {
    for bad in [
        "",
        "   ",
        "<a><b></a>",
        "<a>",
        "</a>",
        "<a/><b/>",
        "<a/>text",
        "<a><!-- x",
    ] {
        assert!(parse(bad, &Limits::default()).is_err(), "{bad:?}");
    }
}

#[test]
fn leniencies_kept_from_the_ptk_reader() {
    let e = parse(
        "\u{FEFF} \n<Interaction Contact=\"1\" InteractionType=FIFO></\ninteraction>",
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(e.attr("interactiontype"), Some("FIFO"));
    let e = parse(
        "<p:a xmlns:p='urn:p'><q:b>x</q:b></P:A>",
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(
        e.child("B").unwrap().namespace,
        None,
        "undeclared prefix: unknown namespace"
    );
}

#[test]
fn text_is_borrowed_from_the_document() {
    let xml = "<r><a>plain text</a><b>a &amp; b</b><c><![CDATA[<raw>]]></c></r>";
    let root = parse(xml, &Limits::default()).unwrap();
    assert!(matches!(
        root.child("a").unwrap().text,
        Cow::Borrowed("plain text")
    ));
    assert!(matches!(root.child("a").unwrap().name, Cow::Borrowed("a")));
    assert_eq!(root.child("b").unwrap().text, "a & b");
    assert_eq!(root.child("c").unwrap().text, "<raw>");
    let owned: Element<'static> = root.clone().into_owned();
    assert_eq!(owned, root);
}

#[test]
fn charsets_are_decoded() {
    // "שלום" in windows-1255
    let body = b"<?xml version=\"1.0\" encoding=\"windows-1255\"?><x>\xf9\xec\xe5\xed</x>";
    let text = decode(body, None, &Limits::default()).unwrap();
    assert_eq!(parse(&text, &Limits::default()).unwrap().value(), "שלום");
    let utf8 = "<x>שלום</x>";
    assert!(matches!(
        decode(
            utf8.as_bytes(),
            Some("text/xml; charset=utf-8"),
            &Limits::default()
        ),
        Ok(Cow::Borrowed(_))
    ));
    assert!(decode(
        b"<x>\xff</x>",
        Some("text/xml; charset=utf-8"),
        &Limits::default()
    )
    .is_err());
}

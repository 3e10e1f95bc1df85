//! The tree-based XML-RPC reader the streaming one replaced, kept for the tests as the
//! reference: for any input both give the same values, and errors of the same kind.

use super::{is_integer, not_rpc, unexpected, Fault, MethodCall, Value};
use crate::xml::{self, Element};
use crate::{Limits, WireError};
use base64::Engine as _;

/// Parses a `<methodCall>`. Tolerant reader: element names case-insensitive (`methodcall`,
/// `methodresponse`), whitespace between elements ignored, `<int>`/`<i4>`/`<i8>` as i64 (a value
/// with surrounding whitespace is trimmed for numbers, never for strings), untyped `<value>`
/// text is a string, `<nil/>` and `<ex:nil/>` are Nil, `<boolean>` 0/1/true/false.
/// Refuses: any `<!DOCTYPE>` or `<!ENTITY>` ([`WireError::DoctypeRefused`]), nesting deeper than
/// `limits.max_depth`, input longer than `limits.max_bytes`. Predefined entities and numeric character
/// references (`&#1488;` Hebrew) are decoded.
pub(crate) fn parse_call(xml: &str, limits: &Limits) -> Result<MethodCall, WireError> {
    let root = xml::parse(xml, limits)?;
    if root.name != "methodcall" {
        return Err(not_rpc(format!(
            "root element is <{}>, expected <methodCall>",
            root.name
        )));
    }
    no_stray_text(&root)?;
    let mut method = None;
    let mut params = Vec::new();
    for child in root.elements() {
        match child.name.as_str() {
            "methodname" if method.is_none() => {
                no_children(child)?;
                method = Some(child.text().trim().to_string());
            }
            "params" => params = read_params(child)?,
            other => return Err(unexpected(other, "methodCall")),
        }
    }
    let method = method
        .filter(|m| !m.is_empty())
        .ok_or_else(|| not_rpc("missing <methodName>".to_string()))?;
    Ok(MethodCall { method, params })
}

/// Parses a `<methodResponse>` (for tests and for clients): `Ok(Ok(params))` or
/// `Ok(Err(fault))`. Tolerates the seed's response closed with `</methodCall>`.
///
/// The closing-tag tolerance lives in the tree builder: the root element may be closed by
/// either XML-RPC root name, as in the seed's HANGUP_CALL response example.
pub(crate) fn parse_response(
    xml: &str,
    limits: &Limits,
) -> Result<Result<Vec<Value>, Fault>, WireError> {
    let root = xml::parse(xml, limits)?;
    if root.name != "methodresponse" {
        return Err(not_rpc(format!(
            "root element is <{}>, expected <methodResponse>",
            root.name
        )));
    }
    no_stray_text(&root)?;
    let mut children = root.elements();
    let (Some(body), None) = (children.next(), children.next()) else {
        return Err(not_rpc(
            "<methodResponse> must hold exactly one of <params> or <fault>".to_string(),
        ));
    };
    match body.name.as_str() {
        "params" => Ok(Ok(read_params(body)?)),
        "fault" => {
            no_stray_text(body)?;
            let mut values = body.elements();
            let (Some(value), None) = (values.next(), values.next()) else {
                return Err(not_rpc("<fault> must hold one <value>".to_string()));
            };
            if value.name != "value" {
                return Err(unexpected(&value.name, "fault"));
            }
            let value = read_value(value)?;
            let code = match value.member("faultCode") {
                Some(Value::Int(code)) => *code,
                Some(Value::Str(code)) => code
                    .trim()
                    .parse()
                    .map_err(|_| not_rpc(format!("faultCode {code:?} is not an integer")))?,
                _ => return Err(not_rpc("fault without an integer faultCode".to_string())),
            };
            let message = match value.member("faultString") {
                Some(Value::Str(message)) => message.clone(),
                Some(Value::Nil) | None => String::new(),
                Some(_) => return Err(not_rpc("faultString is not a string".to_string())),
            };
            Ok(Err(Fault { code, message }))
        }
        other => Err(unexpected(other, "methodResponse")),
    }
}

fn no_stray_text(element: &Element) -> Result<(), WireError> {
    match element.stray_text() {
        Some(text) => Err(not_rpc(format!(
            "unexpected text {:?} in <{}>",
            text.trim(),
            element.name
        ))),
        None => Ok(()),
    }
}

fn no_children(element: &Element) -> Result<(), WireError> {
    match element.elements().next() {
        Some(child) => Err(unexpected(&child.name, &element.name)),
        None => Ok(()),
    }
}

fn read_params(params: &Element) -> Result<Vec<Value>, WireError> {
    no_stray_text(params)?;
    let mut out = Vec::new();
    for param in params.elements() {
        if param.name != "param" {
            return Err(unexpected(&param.name, "params"));
        }
        no_stray_text(param)?;
        let mut values = param.elements();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(not_rpc("<param> must hold exactly one <value>".to_string()));
        };
        if value.name != "value" {
            return Err(unexpected(&value.name, "param"));
        }
        out.push(read_value(value)?);
    }
    Ok(out)
}

/// Reads a `<value>` element. Recursion is bounded by the tree's depth limit.
fn read_value(value: &Element) -> Result<Value, WireError> {
    let mut typed = value.elements();
    let Some(inner) = typed.next() else {
        // untyped: the text, exactly
        return Ok(Value::Str(value.text()));
    };
    if let Some(extra) = typed.next() {
        return Err(unexpected(&extra.name, "value"));
    }
    no_stray_text(value)?;
    let scalar = |inner: &Element| -> Result<String, WireError> {
        no_children(inner)?;
        Ok(inner.text())
    };
    match inner.name.as_str() {
        "int" | "i4" | "i8" => {
            let text = scalar(inner)?;
            let text = text.trim();
            match text.parse::<i64>() {
                Ok(i) => Ok(Value::Int(i)),
                Err(_) if is_integer(text) => Ok(Value::BigInt(text.to_string())),
                Err(_) => Err(not_rpc(format!(
                    "<{}> {text:?} is not an integer",
                    inner.name
                ))),
            }
        }
        "boolean" => {
            let text = scalar(inner)?;
            match text.trim().to_ascii_lowercase().as_str() {
                "1" | "true" => Ok(Value::Bool(true)),
                "0" | "false" => Ok(Value::Bool(false)),
                other => Err(not_rpc(format!("<boolean> {other:?} is not 0 or 1"))),
            }
        }
        "string" => Ok(Value::Str(scalar(inner)?)),
        "double" => {
            let text = scalar(inner)?;
            let text = text.trim();
            match text.parse::<f64>() {
                Ok(_) => Ok(Value::Double(text.to_string())),
                Err(_) => Err(not_rpc(format!("<double> {text:?} is not a number"))),
            }
        }
        "datetime.iso8601" => Ok(Value::DateTime(scalar(inner)?.trim().to_string())),
        "base64" => {
            let text = scalar(inner)?;
            let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map(Value::Base64)
                .map_err(|e| not_rpc(format!("bad <base64>: {e}")))
        }
        "nil" => {
            no_children(inner)?;
            no_stray_text(inner)?;
            Ok(Value::Nil)
        }
        "struct" => {
            no_stray_text(inner)?;
            let mut members = Vec::new();
            for member in inner.elements() {
                if member.name != "member" {
                    return Err(unexpected(&member.name, "struct"));
                }
                members.push(read_member(member)?);
            }
            Ok(Value::Struct(members))
        }
        "array" => {
            no_stray_text(inner)?;
            let mut children = inner.elements();
            let holder = match (children.next(), children.next()) {
                (Some(data), None) if data.name == "data" => {
                    no_stray_text(data)?;
                    data
                }
                (Some(data), Some(extra)) if data.name == "data" => {
                    return Err(unexpected(&extra.name, "array"));
                }
                // tolerated: values directly inside <array>
                _ => inner,
            };
            let mut items = Vec::new();
            for item in holder.elements() {
                if item.name != "value" {
                    return Err(unexpected(&item.name, &holder.name));
                }
                items.push(read_value(item)?);
            }
            Ok(Value::Array(items))
        }
        other => Err(unexpected(other, "value")),
    }
}

fn read_member(member: &Element) -> Result<(String, Value), WireError> {
    no_stray_text(member)?;
    let mut name = None;
    let mut value = None;
    for child in member.elements() {
        match child.name.as_str() {
            "name" if name.is_none() => {
                no_children(child)?;
                name = Some(child.text());
            }
            "value" if value.is_none() => value = Some(read_value(child)?),
            other => return Err(unexpected(other, "member")),
        }
    }
    match (name, value) {
        (Some(name), Some(value)) => Ok((name, value)),
        (None, _) => Err(not_rpc("<member> without <name>".to_string())),
        (Some(name), None) => Err(not_rpc(format!("<member> {name:?} without <value>"))),
    }
}

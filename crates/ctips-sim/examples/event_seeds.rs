//! Writes one `PublishCTIEvent` body per event contract of WIRE.md, every member filled with
//! a sample value, as the simulator sends them: seeds for the `ctips` fuzz target
//! (`fuzz/seeds/make.py` runs it). Usage: `cargo run -p ctips-sim --example event_seeds DIR`.

use ctips_sim::model::category_and_type;
use ctips_sim::wire::{publish_body, spec, Fields, Ty, V};

/// A sample value of a member's type; contracts nest at most `depth` more levels.
fn sample(name: &str, ty: &Ty, depth: usize) -> V {
    match ty {
        Ty::Int | Ty::Long => V::Int(if name == "RequestId" { 0 } else { 7 }),
        Ty::Str => V::Str(format!("{name} 1")),
        Ty::Bool => V::Bool(true),
        Ty::Enum(e) => V::Enum(
            spec()
                .enums
                .get(e)
                .and_then(|values| values.get(1).or(values.first()))
                .map(|(n, _)| n.clone())
                .unwrap_or_default(),
        ),
        Ty::Array(inner) => V::Arr(vec![sample(name, inner, depth)]),
        Ty::Contract(c) if depth > 0 => match spec().contracts.get(c) {
            Some(contract) => V::Obj(
                contract
                    .members
                    .iter()
                    .map(|m| (m.name.clone(), sample(&m.name, &m.ty, depth - 1)))
                    .collect::<Fields>(),
            ),
            None => V::Nil,
        },
        Ty::Contract(_) => V::Nil,
    }
}

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    std::fs::create_dir_all(&dir)?;
    let mut written = 0;
    for (name, contract) in &spec().contracts {
        if !contract.members.iter().any(|m| m.name == "EventType") {
            continue;
        }
        let mut fields: Fields = contract
            .members
            .iter()
            .map(|m| (m.name.clone(), sample(&m.name, &m.ty, 3)))
            .collect();
        let (category, event_type) = category_and_type(name);
        fields.insert("EventCategory".into(), V::Enum(category.into()));
        fields.insert("EventType".into(), V::Enum(event_type));
        std::fs::write(
            format!("{dir}/{name}.xml"),
            publish_body(name, &fields).as_bytes(),
        )?;
        written += 1;
    }
    println!("{written} event bodies in {dir}");
    Ok(())
}

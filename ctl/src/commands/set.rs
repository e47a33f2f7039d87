//! `shoalctl set image deployment/NAME CONTAINER=IMAGE…`: read-modify-write Update of the
//! template's (or a pod's) container images with the resourceVersion as precondition.

use serde_json::Value;

use super::{Context, one_target, print};
use crate::cli::SetCommand;
use crate::error::CtlError;

/// Runs `set …`.
pub async fn run(ctx: &mut Context, command: SetCommand) -> Result<(), CtlError> {
    match command {
        SetCommand::Image { args } => set_image(ctx, &args).await,
    }
}

async fn set_image(ctx: &mut Context, args: &[String]) -> Result<(), CtlError> {
    let split = args.iter().position(|a| a.contains('=')).ok_or_else(|| {
        CtlError::Usage("give CONTAINER=IMAGE pairs after the object, e.g. app=busybox:2".into())
    })?;
    let (target, pairs) = args.split_at(split);
    let (kind, name) = one_target(target, &["Deployment", "Pod"])?;
    let pairs = parse_image_pairs(pairs)?;
    let ns = ctx.namespace_for(&kind);
    let pointer = if kind.kind == "Pod" {
        "/spec/containers"
    } else {
        "/spec/template/spec/containers"
    };
    let what = format!("{} {name:?}", kind.singular);
    let written = ctx
        .modify(&kind, &ns, &name, None, |obj| {
            set_images(obj, pointer, &pairs, &what)
        })
        .await?;
    let verb = if written.is_some() {
        "image updated"
    } else {
        "image unchanged"
    };
    print(&format!("{} {verb}\n", kind.slash_name(&name)))
}

/// Parses `CONTAINER=IMAGE` arguments (`*=IMAGE` means every container); a container named
/// twice is an error.
pub fn parse_image_pairs(args: &[String]) -> Result<Vec<(String, String)>, CtlError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for a in args {
        let (c, i) = a.split_once('=').ok_or_else(|| {
            CtlError::Usage(format!(
                "{a:?}: expected CONTAINER=IMAGE, e.g. app=busybox:2"
            ))
        })?;
        let (c, i) = (c.trim(), i.trim());
        if c.is_empty() || i.is_empty() || i.chars().any(char::is_whitespace) {
            return Err(CtlError::Usage(format!(
                "{a:?}: expected CONTAINER=IMAGE with a non-empty container and image"
            )));
        }
        if out.iter().any(|(seen, _)| seen == c) {
            return Err(CtlError::Usage(format!("container {c:?} is given twice")));
        }
        out.push((c.to_string(), i.to_string()));
    }
    if out.is_empty() {
        return Err(CtlError::Usage("no CONTAINER=IMAGE pair given".into()));
    }
    Ok(out)
}

/// Sets the images of the containers at `pointer`; an unknown container is an error that
/// names the containers there. `false` when every image already matches.
pub fn set_images(
    obj: &mut Value,
    pointer: &str,
    pairs: &[(String, String)],
    what: &str,
) -> Result<bool, CtlError> {
    let containers = obj
        .pointer_mut(pointer)
        .and_then(Value::as_array_mut)
        .ok_or_else(|| CtlError::BadResponse(format!("{what} has no containers")))?;
    let names: Vec<String> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap_or("").to_string())
        .collect();
    for (c, _) in pairs {
        if c != "*" && !names.contains(c) {
            return Err(CtlError::Usage(format!(
                "{what} has no container {c:?} (its containers: {})",
                names.join(", ")
            )));
        }
    }
    let mut changed = false;
    for (container, name) in containers.iter_mut().zip(&names) {
        let image = pairs
            .iter()
            .find(|(c, _)| c == name)
            .or_else(|| pairs.iter().find(|(c, _)| c == "*"));
        if let Some((_, image)) = image
            && container["image"].as_str() != Some(image.as_str())
        {
            container["image"] = Value::String(image.clone());
            changed = true;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pairs_parse() {
        assert_eq!(
            parse_image_pairs(&strings(&["app=busybox:2", "log = reg:5000/x:1"])).unwrap(),
            [
                ("app".to_string(), "busybox:2".to_string()),
                ("log".to_string(), "reg:5000/x:1".to_string())
            ]
        );
        for bad in [&["app"][..], &["=x"], &["app="], &["a=x", "a=y"], &[]] {
            assert!(parse_image_pairs(&strings(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn images_change_and_unknown_containers_are_named() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "busybox:1"}, {"name": "log", "image": "x:1"}
        ]}}}});
        let p = "/spec/template/spec/containers";
        let pairs = vec![("app".to_string(), "busybox:2".to_string())];
        assert!(set_images(&mut d, p, &pairs, "deployment \"web\"").unwrap());
        assert_eq!(d.pointer(p).unwrap()[0]["image"], "busybox:2");
        assert_eq!(d.pointer(p).unwrap()[1]["image"], "x:1");
        assert!(!set_images(&mut d, p, &pairs, "deployment \"web\"").unwrap());
        let e = set_images(
            &mut d,
            p,
            &[("db".to_string(), "pg".to_string())],
            "deployment \"web\"",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "deployment \"web\" has no container \"db\" (its containers: app, log)"
        );
        assert!(set_images(&mut d, p, &[("*".to_string(), "y".to_string())], "d").unwrap());
        assert_eq!(d.pointer(p).unwrap()[1]["image"], "y");
    }
}

//! A plan in code: the manifest a component's `job-plan` export returns, turned into the
//! manifest of that component. Its operators name no component file: they are the component's
//! own, so each is checked against the names the component exports before anything is
//! deployed, and a plan cannot reach for files beside it (the component is the whole job).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::manifest::{JobError, Manifest, parse_manifest};

/// The manifest of the plan `text` that the component at `component` returned; `exported` are
/// the operator names it exports, `args` fill the plan's `${name}` placeholders.
pub fn manifest_from_plan(
    text: &str,
    component: &Path,
    exported: &[String],
    args: &BTreeMap<String, String>,
) -> Result<Manifest, JobError> {
    let mut manifest = parse_manifest(text, args).map_err(|e| match e {
        JobError::Parse { message, .. } => JobError::Parse {
            path: PathBuf::from(format!("{} (its plan)", component.display())),
            message,
        },
        other => other,
    })?;
    let file_name = component.file_name().map_or_else(
        || component.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    for operator in &mut manifest.operators {
        if let Some(other) = &operator.component {
            return Err(JobError::Invalid(format!(
                "the plan of `{file_name}` gives operator `{}` the component `{other}`; a plan's \
                 operators are its own component's (to run other components, write a manifest \
                 and `weir package` it)",
                operator.id
            )));
        }
        if operator.native.is_some() {
            continue;
        }
        let name = operator.operator.as_deref().unwrap_or(&operator.id);
        if !exported.iter().any(|e| e == name) {
            return Err(JobError::Invalid(format!(
                "the plan of `{file_name}` names operator `{name}` (node `{}`), which the \
                 component does not export (it exports {})",
                operator.id,
                if exported.is_empty() {
                    "none".to_string()
                } else {
                    exported.join(", ")
                }
            )));
        }
        operator.component = Some(component.display().to_string());
    }
    // The component path is used as given, like a data path.
    manifest.base_dir = PathBuf::new();
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = "name = \"p\"\n[[source]]\nid = \"n\"\nkind = \"sequence\"\ncount = 3\n\
        [[operator]]\nid = \"double\"\ninput = \"n\"\n\
        [[operator]]\nid = \"twice\"\noperator = \"double\"\ninput = \"double\"\n\
        [[sink]]\nid = \"out\"\nkind = \"file\"\npath = \"${output}\"\ninput = \"twice\"\n";

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operators_become_the_component_s_own_and_placeholders_are_filled() {
        let exported = vec!["double".to_string()];
        let m = manifest_from_plan(
            PLAN,
            Path::new("jobs/doubler.wasm"),
            &exported,
            &args(&[("output", "out.txt")]),
        )
        .unwrap();
        for op in &m.operators {
            assert_eq!(op.component.as_deref(), Some("jobs/doubler.wasm"));
        }
        assert_eq!(m.sinks[0].path.as_deref(), Some("out.txt"));
    }

    #[test]
    fn an_operator_the_component_does_not_export_is_named_with_what_it_exports() {
        let exported = vec!["triple".to_string(), "halve".to_string()];
        let err = manifest_from_plan(
            PLAN,
            Path::new("doubler.wasm"),
            &exported,
            &args(&[("output", "o")]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "the plan of `doubler.wasm` names operator `double` (node `double`), which the \
             component does not export (it exports triple, halve)"
        );
    }

    #[test]
    fn a_plan_may_not_name_another_component_nor_leave_an_argument_unfilled() {
        let other = PLAN.replacen("input = \"n\"", "input = \"n\"\ncomponent = \"x.wasm\"", 1);
        let err = manifest_from_plan(
            &other,
            Path::new("d.wasm"),
            &["double".into()],
            &args(&[("output", "o")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("gives operator `double` the component `x.wasm`"),
            "{err}"
        );
        let err = manifest_from_plan(PLAN, Path::new("d.wasm"), &["double".into()], &args(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no `--arg output=...`"), "{err}");
        let err = manifest_from_plan("[[source]\n", Path::new("d.wasm"), &[], &args(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("d.wasm (its plan)"), "{err}");
    }
}

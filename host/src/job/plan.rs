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
    let file_name = component.file_name().map_or_else(
        || component.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let in_plan = |e: JobError| match e {
        JobError::Parse { message, .. } => JobError::Parse {
            path: PathBuf::from(format!("{} (its plan)", component.display())),
            message,
        },
        other => other,
    };
    check_paths_are_arguments(text, &file_name).map_err(in_plan)?;
    let mut manifest = parse_manifest(text, args).map_err(in_plan)?;
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

/// Files are the user's to name, not the component's: every `path` of a plan's sources and
/// sinks must be one `${name}` placeholder, filled from the command line, so a component run as
/// a job reads and writes only the files its runner names.
fn check_paths_are_arguments(text: &str, file_name: &str) -> Result<(), JobError> {
    let value: toml::Value = toml::from_str(text).map_err(|e| JobError::Parse {
        path: PathBuf::new(),
        message: e.to_string(),
    })?;
    for table in ["source", "sink"] {
        let nodes = value.get(table).and_then(toml::Value::as_array);
        for node in nodes.into_iter().flatten() {
            let Some(path) = node.get("path") else {
                continue;
            };
            let placeholder = path.as_str().is_some_and(|p| {
                p.strip_prefix("${")
                    .and_then(|rest| rest.strip_suffix('}'))
                    .is_some_and(|name| !name.is_empty() && !name.contains(['$', '{', '}']))
            });
            if !placeholder {
                let id = node.get("id").and_then(toml::Value::as_str).unwrap_or("?");
                return Err(JobError::Invalid(format!(
                    "the plan of `{file_name}` gives {table} `{id}` the path {path}; a plan's \
                     paths must each be an argument (`args.get(\"name\")`, filled by `--arg \
                     name=...`), so only the user running the job names files"
                )));
            }
        }
    }
    Ok(())
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
    fn a_plan_may_not_name_a_file_itself() {
        let exported = ["double".to_string()];
        let literal = PLAN.replace("path = \"${output}\"", "path = \"/home/u/.profile\"");
        let err = manifest_from_plan(&literal, Path::new("d.wasm"), &exported, &args(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "gives sink `out` the path \"/home/u/.profile\"; a plan's paths must each be an \
                 argument"
            ),
            "{err}"
        );
        let mixed = PLAN.replace("path = \"${output}\"", "path = \"/tmp/${output}\"");
        let outcome = manifest_from_plan(
            &mixed,
            Path::new("d.wasm"),
            &exported,
            &args(&[("output", "o")]),
        );
        assert!(outcome.is_err());
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

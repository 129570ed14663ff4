//! Sweeps: one scenario run again for each of several values of one of
//! its fields. A scenario file with a `[sweep]` table names the field
//! (dotted, as `clients.copies`) and its values; everything else is the
//! base every run shares.

use std::path::Path;

use crate::scenario::{Scenario, ScenarioError, read_table};

/// What a scenario file asks for.
#[derive(Clone, Debug)]
pub enum Plan {
    /// One run.
    One(Box<Scenario>),
    /// One run per value of a field.
    Sweep(Sweep),
}

/// The runs of a sweep, in the file's order.
#[derive(Clone, Debug)]
pub struct Sweep {
    /// The field that varies, as the file names it.
    pub field: String,
    /// Each value, as written, and the scenario it gives.
    pub runs: Vec<(String, Scenario)>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepTable {
    field: String,
    values: Vec<toml::Value>,
}

impl Plan {
    /// Reads the scenario or sweep in `path`, and checks every run.
    ///
    /// # Errors
    ///
    /// [`ScenarioError`] if the file cannot be read or parsed, or one of
    /// its runs could not be run.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let mut base = read_table(path)?;
        let Some(sweep) = base.remove("sweep") else {
            return Scenario::from_table(base, path).map(|s| Self::One(Box::new(s)));
        };
        let invalid = |what: String| ScenarioError::Invalid(format!("{}: {what}", path.display()));
        let sweep: SweepTable = sweep
            .try_into()
            .map_err(|err| invalid(format!("[sweep] needs `field` and `values`: {err}")))?;
        if sweep.values.is_empty() {
            return Err(invalid("[sweep] values is empty".to_owned()));
        }
        let mut runs = Vec::with_capacity(sweep.values.len());
        for value in sweep.values {
            let label = label(&value);
            let mut table = base.clone();
            set(&mut table, &sweep.field, value).map_err(invalid)?;
            let scenario = Scenario::from_table(table, path)
                .map_err(|err| invalid(format!("with {} = {label}: {err}", sweep.field)))?;
            runs.push((label, scenario));
        }
        Ok(Self::Sweep(Sweep {
            field: sweep.field,
            runs,
        }))
    }
}

/// Sets the field at the dotted `path` of `table`, which must already
/// be there: a sweep varies what the base sets, so a misspelt field is an
/// error rather than a run of the base.
fn set(table: &mut toml::Table, path: &str, value: toml::Value) -> Result<(), String> {
    let mut parts = path.split('.').peekable();
    let mut here = table;
    while let Some(part) = parts.next() {
        let slot = here
            .get_mut(part)
            .ok_or_else(|| format!("[sweep] field {path}: the base has no `{part}`"))?;
        if parts.peek().is_none() {
            *slot = value;
            return Ok(());
        }
        here = slot
            .as_table_mut()
            .ok_or_else(|| format!("[sweep] field {path}: `{part}` is not a table"))?;
    }
    Err(format!("[sweep] field {path:?} is empty"))
}

/// A value as the tables show it.
fn label(value: &toml::Value) -> String {
    match value {
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) if x.is_infinite() => "never".to_owned(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::String(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

//! Python objects to a generic value, with the same depth limit as the JSON and msgpack
//! decoders and cycle detection: a model nested 20,000 deep or a list that contains itself
//! is a clear error, never a stack overflow.

use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PyMapping, PySet, PyString, PyTuple,
};
use serde_json::{Map, Number, Value};

use crate::model::path::Path;
use crate::model::MAX_DEPTH;

/// Converts a model given as Python objects (mappings, lists, tuples, sets, strings,
/// numbers, booleans, `None`). The error names the path of the offending object.
pub(super) fn to_value(obj: &Bound<'_, PyAny>) -> Result<Value, String> {
    let mut walker = Walker { open: Vec::new() };
    walker.value(obj, &Path::Root)
}

struct Walker {
    /// Addresses of the containers being converted, outermost first: one seen again is a
    /// cycle (a container shared by two branches is fine, it is not open twice).
    open: Vec<usize>,
}

// Paths are written out only for an error: building one per key and item was 40 % of the
// conversion.
fn at(path: &Path) -> String {
    shown(path.render())
}

fn shown(path: String) -> String {
    if path.is_empty() {
        "the model".to_string()
    } else {
        path
    }
}

impl Walker {
    fn value(&mut self, obj: &Bound<'_, PyAny>, path: &Path) -> Result<Value, String> {
        if obj.is_none() {
            return Ok(Value::Null);
        }
        if let Ok(b) = obj.cast::<PyBool>() {
            return Ok(Value::Bool(b.is_true()));
        }
        if obj.is_instance_of::<PyInt>() {
            return integer(obj, path);
        }
        if let Ok(f) = obj.cast::<PyFloat>() {
            return Number::from_f64(f.value())
                .map(Value::Number)
                .ok_or_else(|| format!("{}: {} is not a finite number", at(path), f.value()));
        }
        if let Ok(s) = obj.cast::<PyString>() {
            return Ok(Value::String(
                s.to_cow().map_err(|e| e.to_string())?.into_owned(),
            ));
        }
        // Plain dicts and lists first: the `Mapping` check is an `isinstance` against the ABC.
        let is_mapping = obj.is_exact_instance_of::<PyDict>()
            || (!obj.is_exact_instance_of::<PyList>()
                && (obj.is_instance_of::<PyDict>() || obj.cast::<PyMapping>().is_ok()));
        let is_sequence = obj.is_instance_of::<PyList>()
            || obj.is_instance_of::<PyTuple>()
            || obj.is_instance_of::<PySet>()
            || obj.is_instance_of::<PyFrozenSet>();
        if !is_mapping && !is_sequence {
            let name = obj
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into());
            return Err(format!(
                "{}: a {name} cannot be part of a model (mappings, lists, strings, numbers, \
                 booleans and None can)",
                at(path)
            ));
        }
        self.enter(obj, path)?;
        let result = if is_mapping {
            self.mapping(obj, path)
        } else {
            self.sequence(obj, path)
        };
        self.open.pop();
        result
    }

    fn enter(&mut self, obj: &Bound<'_, PyAny>, path: &Path) -> Result<(), String> {
        let address = obj.as_ptr() as usize;
        if self.open.contains(&address) {
            return Err(format!(
                "{}: the object contains itself (a cycle); a model is a tree",
                at(path)
            ));
        }
        if self.open.len() >= MAX_DEPTH {
            return Err(format!(
                "{}: nested deeper than {MAX_DEPTH} levels",
                shown(truncated(&path.render()))
            ));
        }
        self.open.push(address);
        Ok(())
    }

    fn mapping(&mut self, obj: &Bound<'_, PyAny>, path: &Path) -> Result<Value, String> {
        let items: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> = match obj.cast::<PyDict>() {
            Ok(d) => d.iter().collect(),
            Err(_) => {
                let m = obj.cast::<PyMapping>().map_err(|e| e.to_string())?;
                let items = m.items().map_err(|e| format!("{}: {e}", at(path)))?;
                items
                    .iter()
                    .map(|kv| kv.extract::<(Bound<'_, PyAny>, Bound<'_, PyAny>)>())
                    .collect::<PyResult<_>>()
                    .map_err(|e| format!("{}: {e}", at(path)))?
            }
        };
        let mut out = Map::new();
        for (k, v) in items {
            let Ok(key) = k.cast::<PyString>() else {
                let shown = k.repr().map(|r| r.to_string()).unwrap_or_default();
                return Err(format!("{}: key {shown} is not a string", at(path)));
            };
            let key = key.to_cow().map_err(|e| e.to_string())?.into_owned();
            let value = self.value(&v, &path.key(&key))?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }

    fn sequence(&mut self, obj: &Bound<'_, PyAny>, path: &Path) -> Result<Value, String> {
        let mut out = Vec::new();
        let iter = obj.try_iter().map_err(|e| format!("{}: {e}", at(path)))?;
        for (i, item) in iter.enumerate() {
            let item = item.map_err(|e| format!("{}: {e}", at(path)))?;
            out.push(self.value(&item, &path.index(i))?);
        }
        Ok(Value::Array(out))
    }
}

fn integer(obj: &Bound<'_, PyAny>, path: &Path) -> Result<Value, String> {
    if let Ok(n) = obj.extract::<i64>() {
        return Ok(Value::from(n));
    }
    if let Ok(n) = obj.extract::<u64>() {
        return Ok(Value::from(n));
    }
    Err(format!("{}: integer out of range", at(path)))
}

/// A deep path, shortened to its start and end.
fn truncated(path: &str) -> String {
    const KEEP: usize = 60;
    let chars: Vec<char> = path.chars().collect();
    if chars.len() <= 2 * KEEP {
        return path.to_string();
    }
    let head: String = chars[..KEEP].iter().collect();
    let tail: String = chars[chars.len() - KEEP..].iter().collect();
    format!("{head}...{tail}")
}

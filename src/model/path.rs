//! Where the reader is in the input (`security_groups.web.rules[3]`), written out only when a
//! problem is reported there.
//!
//! The reader descends into every field of every port and rule; building each field's path
//! as a `String` on the way down cost a fifth of the parse. A [`Path`] is a chain of borrowed
//! steps on the stack instead.

/// A position in the input: the root, or a key or index below another position.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Path<'p> {
    /// The top-level value (written as the empty string).
    Root,
    /// `parent.key` (or `key` below the root).
    Key(&'p Path<'p>, &'p str),
    /// `parent[i]`.
    Index(&'p Path<'p>, usize),
}

impl<'p> Path<'p> {
    /// The position of `key` below this one.
    pub(crate) fn key<'q>(&'q self, key: &'q str) -> Path<'q> {
        Path::Key(self, key)
    }

    /// The position of item `i` below this one.
    pub(crate) fn index(&'p self, i: usize) -> Path<'p> {
        Path::Index(self, i)
    }

    /// The path as problems show it.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Path::Root => {}
            Path::Key(parent, key) => {
                parent.write(out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Path::Index(parent, i) => {
                parent.write(out);
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_as_format_does() {
        let root = Path::Root;
        assert_eq!(root.render(), "");
        assert_eq!(root.key("ports").render(), "ports");
        let ports = root.key("ports");
        let p1 = ports.key("p1");
        assert_eq!(p1.key("id").render(), "ports.p1.id");
        let rules = root.key("rules");
        for i in [0usize, 7, 10, 99, 12_345, usize::MAX] {
            assert_eq!(rules.index(i).render(), format!("rules[{i}]"));
        }
        assert_eq!(root.index(2).render(), "[2]");
        // An empty key below the root leaves the path empty, so the next key has no dot —
        // as the joined strings did.
        let empty = root.key("");
        assert_eq!(empty.key("x").render(), "x");
        let b = root.key("bindings");
        let id = b.key("");
        assert_eq!(id.key("ofport").render(), "bindings..ofport");
    }
}

//! A radix tree over route prefixes: one walk down the request path finds
//! every prefix of it that a route uses, longest first.
//!
//! Hand-written because the path routers on crates.io (matchit, path-tree)
//! match whole segments and parameters, while rgate's contract matches
//! literal prefixes that may end inside a segment (`/api/pay` takes
//! `/api/payments`).

/// Route indices by prefix.
#[derive(Debug, Default)]
pub(super) struct PrefixTable {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    /// The bytes this node adds to its parent's prefix.
    label: Box<[u8]>,
    /// Routes whose prefix ends here, in precedence order.
    routes: Vec<u32>,
    /// Their labels start with distinct bytes.
    children: Vec<Node>,
}

impl PrefixTable {
    pub(super) fn insert(&mut self, prefix: &str, route: u32) {
        let mut node = &mut self.root;
        let mut rest = prefix.as_bytes();
        loop {
            let Some(&first) = rest.first() else {
                node.routes.push(route);
                return;
            };
            let Some(at) = node.children.iter().position(|c| c.label[0] == first) else {
                node.children.push(Node {
                    label: rest.into(),
                    routes: vec![route],
                    children: Vec::new(),
                });
                return;
            };
            let child = &mut node.children[at];
            let common = child
                .label
                .iter()
                .zip(rest)
                .take_while(|(a, b)| a == b)
                .count();
            if common < child.label.len() {
                // Split the edge where the new prefix leaves it.
                let tail = Node {
                    label: child.label[common..].into(),
                    routes: std::mem::take(&mut child.routes),
                    children: std::mem::take(&mut child.children),
                };
                child.label = child.label[..common].into();
                child.children.push(tail);
            }
            node = child;
            rest = &rest[common..];
        }
    }

    /// Calls `visit` with the routes of each prefix of `path`, longest first,
    /// until it returns something.
    pub(super) fn longest_first<'t, R>(
        &'t self,
        path: &str,
        mut visit: impl FnMut(&'t [u32]) -> Option<R>,
    ) -> Option<R> {
        walk(&self.root, path.as_bytes(), &mut visit)
    }
}

fn walk<'t, R>(
    node: &'t Node,
    rest: &[u8],
    visit: &mut impl FnMut(&'t [u32]) -> Option<R>,
) -> Option<R> {
    if let Some(&first) = rest.first() {
        let child = node.children.iter().find(|c| c.label[0] == first);
        if let Some(child) = child.filter(|c| rest.starts_with(&c.label)) {
            if let Some(found) = walk(child, &rest[child.label.len()..], visit) {
                return Some(found);
            }
        }
    }
    if node.routes.is_empty() {
        None
    } else {
        visit(&node.routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(table: &PrefixTable, path: &str) -> Vec<u32> {
        let mut seen = Vec::new();
        let none: Option<()> = table.longest_first(path, |routes| {
            seen.extend_from_slice(routes);
            None
        });
        assert!(none.is_none());
        seen
    }

    #[test]
    fn every_prefix_of_the_path_is_visited_longest_first() {
        let mut table = PrefixTable::default();
        for (i, prefix) in ["/", "/api", "/api/payment", "/api/pay", "/apx", "/api"]
            .iter()
            .enumerate()
        {
            table.insert(prefix, i as u32);
        }
        assert_eq!(all(&table, "/api/payment/1"), [2, 3, 1, 5, 0]);
        assert_eq!(all(&table, "/api/pa"), [1, 5, 0]);
        assert_eq!(all(&table, "/apx/y"), [4, 0]);
        assert_eq!(all(&table, "/b"), [0]);
        assert_eq!(all(&table, ""), Vec::<u32>::new());
        assert_eq!(all(&PrefixTable::default(), "/x"), Vec::<u32>::new());
    }

    #[test]
    fn the_first_answer_stops_the_walk() {
        let mut table = PrefixTable::default();
        table.insert("/a", 0);
        table.insert("/a/b", 1);
        let found = table.longest_first("/a/b/c", |routes| routes.first().copied());
        assert_eq!(found, Some(1));
    }
}

use std::fmt;

/// One structural problem found while importing or verifying a graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A node consumes a value that nothing defines.
    UndefinedInput {
        node: String,
        op: String,
        value: String,
    },
    /// Two definitions (inputs, initializers or node outputs) share a name.
    DuplicateName {
        value: String,
        first: String,
        second: String,
    },
    /// The nodes form a cycle; names one node on it.
    Cycle { node: String, op: String },
    /// A graph output names a value that nothing defines.
    UndefinedOutput { value: String },
    /// Anything else, already phrased for the user.
    Other(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UndefinedInput { node, op, value } => {
                write!(f, "node `{node}` ({op}) consumes tensor `{value}`, which no node, graph input or initializer defines")
            }
            Problem::DuplicateName {
                value,
                first,
                second,
            } => {
                write!(
                    f,
                    "tensor name `{value}` is defined twice: by {first} and by {second}"
                )
            }
            Problem::Cycle { node, op } => {
                write!(f, "the graph has a cycle through node `{node}` ({op})")
            }
            Problem::UndefinedOutput { value } => write!(
                f,
                "graph output `{value}` is not defined by any node, input or initializer"
            ),
            Problem::Other(s) => f.write_str(s),
        }
    }
}

/// Errors of the IR: a list of problems found at once.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IrError {
    #[error("invalid graph: {}", list(.0))]
    Invalid(Vec<Problem>),
}

impl IrError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            IrError::Invalid(p) => p,
        }
    }
}

fn list(p: &[Problem]) -> String {
    if p.len() == 1 {
        return p[0].to_string();
    }
    let mut s = format!("{} problems", p.len());
    for x in p {
        s.push_str("\n  - ");
        s.push_str(&x.to_string());
    }
    s
}

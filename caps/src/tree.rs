//! Tree abilities and subtree scopes (`spec/caps.md` §Tree abilities).
//!
//! A subtree grant is a policy over arguments that the *verifier* derives from its tree state:
//! `{"node": <target id>, "ancestors": [<target id>, <parent id>, …, <ROOT id>]}` (ids as 32
//! lowercase hex characters). Nothing in these arguments is taken from the op.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use cid::Cid;
use ipld_core::ipld::Ipld;

use crate::policy::{Selector, Statement};
use crate::verify::{Authorized, Context, Request};
use crate::{Command, Did, Policy, Proofs, Verifier, VerifyError};

/// A tree ability; each maps to a UCAN command under `/tree`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Ability {
    /// `/tree`: everything.
    All,
    /// `/tree/read`
    Read,
    /// `/tree/read/structure`: node ids, parents, positions.
    ReadStructure,
    /// `/tree/read/payload`: node payloads.
    ReadPayload,
    /// `/tree/write`
    Write,
    /// `/tree/write/create`
    WriteCreate,
    /// `/tree/write/move`
    WriteMove,
    /// `/tree/write/payload`
    WritePayload,
    /// `/tree/write/delete`
    WriteDelete,
}

/// Every ability, broadest first.
pub const ABILITIES: [Ability; 9] = [
    Ability::All,
    Ability::Read,
    Ability::ReadStructure,
    Ability::ReadPayload,
    Ability::Write,
    Ability::WriteCreate,
    Ability::WriteMove,
    Ability::WritePayload,
    Ability::WriteDelete,
];

impl Ability {
    /// The command text.
    pub fn as_str(self) -> &'static str {
        match self {
            Ability::All => "/tree",
            Ability::Read => "/tree/read",
            Ability::ReadStructure => "/tree/read/structure",
            Ability::ReadPayload => "/tree/read/payload",
            Ability::Write => "/tree/write",
            Ability::WriteCreate => "/tree/write/create",
            Ability::WriteMove => "/tree/write/move",
            Ability::WritePayload => "/tree/write/payload",
            Ability::WriteDelete => "/tree/write/delete",
        }
    }

    /// The UCAN command.
    pub fn command(self) -> Command {
        self.as_str().parse().expect("ability commands are valid")
    }
}

/// Error parsing an ability.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tree ability {0:?} (expected /tree, /tree/read[/structure|/payload] or /tree/write[/create|/move|/payload|/delete])")]
pub struct UnknownAbility(pub String);

impl FromStr for Ability {
    type Err = UnknownAbility;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ABILITIES
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAbility(s.to_owned()))
    }
}

impl fmt::Display for Ability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A 16-byte tree node id as used in scope policies (`tree::NodeId`'s bytes).
pub type NodeBytes = [u8; 16];

fn node_hex(id: &NodeBytes) -> Ipld {
    Ipld::String(hex::encode(id))
}

/// The policy "the target is `root` or below it, and not `excluded[i]` or below any of them".
pub fn subtree_policy(root: &NodeBytes, excluded: &[NodeBytes]) -> Policy {
    let ancestors = || Selector::parse(".ancestors").expect("valid selector");
    let is = |id: &NodeBytes| {
        Box::new(Statement::Eq(
            Selector::parse(".").expect("valid selector"),
            node_hex(id),
        ))
    };
    let mut statements = vec![Statement::Any(ancestors(), is(root))];
    for x in excluded {
        statements.push(Statement::Not(Box::new(Statement::Any(ancestors(), is(x)))));
    }
    Policy::new(statements)
}

/// The arguments a verifier derives for a request on `node`, given its ancestors from its parent
/// up to ROOT (empty for ROOT itself).
pub fn tree_args(node: &NodeBytes, ancestors: &[NodeBytes]) -> Ipld {
    let mut path = Vec::with_capacity(ancestors.len() + 1);
    path.push(node_hex(node));
    path.extend(ancestors.iter().map(node_hex));
    Ipld::Map(BTreeMap::from([
        ("node".to_owned(), node_hex(node)),
        ("ancestors".to_owned(), Ipld::List(path)),
    ]))
}

/// A tree request: `actor` wants `ability` on `node` of `owner`'s document.
#[derive(Debug, Clone, Copy)]
pub struct TreeRequest<'a> {
    /// The document owner: root subject of every chain.
    pub owner: &'a Did,
    /// Who acts (the op's replica key).
    pub actor: &'a Did,
    /// What they want to do.
    pub ability: Ability,
    /// The node the ability is exercised on.
    pub node: &'a NodeBytes,
    /// Its ancestors in the verifier's tree state, parent first, ending at ROOT.
    pub ancestors: &'a [NodeBytes],
}

/// The outcome of [`authorize`]: a denial is a value, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the chain.
    Allow(Authorized),
    /// Denied, with the rule that failed.
    Deny {
        /// Why.
        reason: VerifyError,
    },
}

impl Decision {
    /// True for [`Decision::Allow`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// Decides a tree request against a chain (delegation CIDs, root first).
pub fn authorize(
    verifier: &mut Verifier,
    proofs: &Proofs,
    chain: &[Cid],
    request: &TreeRequest<'_>,
    ctx: &Context<'_>,
) -> Decision {
    let command = request.ability.command();
    let args = tree_args(request.node, request.ancestors);
    let req = Request {
        subject: request.owner,
        invoker: request.actor,
        command: &command,
        args: &args,
    };
    match verifier.check(chain, proofs, &req, ctx) {
        Ok(a) => Decision::Allow(a),
        Err(reason) => Decision::Deny { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abilities_round_trip_and_nest() {
        for a in ABILITIES {
            assert_eq!(a.as_str().parse::<Ability>(), Ok(a));
            assert!(Ability::All.command().proves(&a.command()));
        }
        assert!(Ability::Write
            .command()
            .proves(&Ability::WriteMove.command()));
        assert!(!Ability::Read
            .command()
            .proves(&Ability::WriteMove.command()));
        assert!(!Ability::ReadPayload
            .command()
            .proves(&Ability::ReadStructure.command()));
        assert!("/tree/writex".parse::<Ability>().is_err());
    }

    #[test]
    fn subtree_scope() {
        let root = [0u8; 16];
        let a = [1u8; 16];
        let b = [2u8; 16];
        let c = [3u8; 16];
        let pol = subtree_policy(&a, &[b]);
        assert!(pol.matches(&tree_args(&a, &[root])));
        assert!(pol.matches(&tree_args(&c, &[a, root])));
        assert!(!pol.matches(&tree_args(&b, &[a, root])));
        assert!(!pol.matches(&tree_args(&c, &[b, a, root])));
        assert!(!pol.matches(&tree_args(&root, &[])));
        assert!(subtree_policy(&root, &[]).matches(&tree_args(&c, &[b, a, root])));
    }
}

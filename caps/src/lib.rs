//! Canopy capabilities: did:key identities, UCAN 1.0 delegations, subtree scopes, revocation.

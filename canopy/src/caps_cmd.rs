//! `canopy key|token|share|ucan`: capability commands.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum KeyCmd {}
#[derive(Debug, Subcommand)]
pub enum TokenCmd {}
#[derive(Debug, Subcommand)]
pub enum ShareCmd {}
#[derive(Debug, Subcommand)]
pub enum UcanCmd {}

pub fn key(cmd: KeyCmd) -> anyhow::Result<()> {
    match cmd {}
}
pub fn token(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {}
}
pub fn share(cmd: ShareCmd) -> anyhow::Result<()> {
    match cmd {}
}
pub fn ucan(cmd: UcanCmd) -> anyhow::Result<()> {
    match cmd {}
}

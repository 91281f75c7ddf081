// TEMPORARY stub until the certs module lands.
use std::path::PathBuf;
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType { EcdsaP256, EcdsaP384, Rsa2048, Ed25519 }
impl std::str::FromStr for KeyType { type Err = String; fn from_str(_: &str) -> Result<Self, String> { Ok(KeyType::EcdsaP256) } }
pub struct InitOptions { pub out_dir: PathBuf, pub server_names: Vec<String>, pub client_cn: String, pub key_type: KeyType, pub p12_password: String, pub days: u32, pub force: bool }
pub enum LeafKind { Client, Server }
pub struct LeafOptions { pub ca_dir: PathBuf, pub out_dir: PathBuf, pub stem: String, pub common_name: String, pub dns_names: Vec<String>, pub key_type: KeyType, pub p12_password: String, pub days: u32, pub expired: bool, pub kind: LeafKind }
#[derive(Debug)] pub struct CertError;
impl std::fmt::Display for CertError { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "stub") } }
pub fn init(_: &InitOptions) -> Result<bool, CertError> { Err(CertError) }
pub fn issue(_: &LeafOptions) -> Result<(), CertError> { Err(CertError) }

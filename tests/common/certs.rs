//! Test certificates made with the `openssl` CLI: a CA, a second CA nobody
//! trusts, a server certificate for `localhost` (DNS name only, so
//! `127.0.0.1` does not match it), one for `127.0.0.1` (for the Kafka TLS
//! proxy), and client certificates signed by each CA.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::assert_success;

pub struct Certificates {
    pub dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert_success(&output, &format!("openssl {args:?}"));
}

impl Certificates {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("cert dir");
        let path = dir.path();
        for ca in ["ca", "other-ca"] {
            openssl(
                path,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-sha256",
                    "-days",
                    "2",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                    "-subj",
                    &format!("/CN=outbox test {ca}"),
                ],
            );
        }
        let certs = Certificates { dir };
        certs.sign("server", "localhost", "ca", Some("DNS:localhost"));
        certs.sign(
            "kafka",
            "127.0.0.1",
            "ca",
            Some("IP:127.0.0.1,DNS:localhost"),
        );
        certs.sign("client", "certuser", "ca", None);
        certs.sign("rogue-client", "certuser", "other-ca", None);
        certs
    }

    /// `name.pem` and `name.key` for `common_name`, signed by `ca`.
    fn sign(&self, name: &str, common_name: &str, ca: &str, alt_names: Option<&str>) {
        let path = self.dir.path();
        openssl(
            path,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-sha256",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={common_name}"),
            ],
        );
        let extensions = format!("{name}.ext");
        let text = alt_names.map_or(String::new(), |names| format!("subjectAltName={names}\n"));
        std::fs::write(path.join(&extensions), text).expect("extensions file");
        openssl(
            path,
            &[
                "x509",
                "-req",
                "-sha256",
                "-days",
                "2",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &extensions,
            ],
        );
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `file(name)` as a string, for connection strings and flags.
    pub fn path(&self, name: &str) -> String {
        self.file(name).display().to_string()
    }
}

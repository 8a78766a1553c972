//! A real OpenID provider for a test: panva's `oidc-provider` (`xtask/oidc/provider.mjs`) in
//! a child process on a free port with its own signing keys, and tokens got from it the way
//! clients get them (`login.mjs`: the authorization code flow with PKCE for a customer,
//! client credentials for an operator). Tests that need a bad token sign their own, with the
//! provider's keys ([`Oidc::key`]) or with something else.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::process::{Child, Command};
use uuid::Uuid;

/// A running provider.
pub struct Oidc {
    child: Child,
    pub issuer: String,
    pub audience: String,
    keys: PathBuf,
    _dir: TempDir,
}

/// A private folder, removed with the provider.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where `xtask/oidc` is, with its `node_modules` installed by `cargo xtask test`.
fn scripts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../xtask/oidc");
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "{} has no node_modules: run the tests with `cargo xtask test` (it runs `npm ci` there)",
        dir.display()
    );
    dir
}

/// Waits up to 60 s for the provider's discovery document; the exit status if it exits first.
async fn ready(child: &mut Child, issuer: &str) -> Result<(), std::process::ExitStatus> {
    let url = format!("{issuer}/.well-known/openid-configuration");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("ask after the provider") {
            return Err(status);
        }
        let answered = client.get(&url).send().await;
        if answered.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after 60s waiting for the OpenID provider on {issuer} to start"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl Oidc {
    /// Starts a provider for the audience `streamshop` and waits for its discovery document.
    /// A provider that exits before it answers (its port taken after all) is started again
    /// on another port, up to three times.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("streamshop-oidc-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the provider's folder");
        let secret = Uuid::new_v4().simple().to_string();
        let keys = dir.join("keys.json");
        // login.mjs reads the operator's secret from a file, never from its arguments.
        crate::private::write_private(&dir.join("operator-secret"), secret.as_bytes());
        let dir = TempDir(dir);
        for attempt in 1..=3 {
            let port = crate::free_port();
            let mut child = Command::new("node")
                .arg(scripts().join("provider.mjs"))
                .env("OIDC_PORT", port.to_string())
                .env("OIDC_KEYS", &keys)
                .env("OIDC_OPERATOR_SECRET", &secret)
                .env("OIDC_AUDIENCE", "streamshop")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .expect("start node provider.mjs (node must be installed)");
            let issuer = format!("http://127.0.0.1:{port}");
            match ready(&mut child, &issuer).await {
                Ok(()) => {
                    return Self {
                        child,
                        issuer,
                        audience: "streamshop".into(),
                        keys,
                        _dir: dir,
                    }
                }
                Err(status) => eprintln!(
                    "testkit: the OpenID provider on port {port} exited ({status}) before it \
                     answered (attempt {attempt} of 3)"
                ),
            }
        }
        panic!("the OpenID provider exited before it answered, three times (see its errors above)")
    }
    /// An access token for `customer`, from the authorization code flow; its `email` claim
    /// is `<customer>@customers.example`.
    pub async fn customer_token(&self, customer: Uuid) -> String {
        self.login(&["--customer", &customer.to_string()]).await
    }

    /// An access token for `customer` who signed in giving `email` (their token's claim).
    pub async fn customer_token_with_email(&self, customer: Uuid, email: &str) -> String {
        self.login(&["--customer", &customer.to_string(), "--email", email])
            .await
    }

    /// An operator's access token (client credentials, scope `admin`).
    pub async fn admin_token(&self) -> String {
        let file = self.secret_file();
        self.login(&["--admin", "--secret-file", &file]).await
    }

    async fn login(&self, args: &[&str]) -> String {
        let out = crate::stdout_of(
            Command::new("node")
                .arg(scripts().join("login.mjs"))
                .args(["--issuer", &self.issuer, "--audience", &self.audience])
                .args(args),
            &format!("login.mjs {args:?}"),
        )
        .await;
        out.trim().to_owned()
    }

    /// The shell command that prints a token from this provider, as `cargo xtask token` does
    /// from the local stack's: append `--customer <uuid>`, or use [`Oidc::admin_command`].
    pub fn token_command(&self) -> String {
        format!(
            "node '{}' --issuer {} --audience {}",
            scripts().join("login.mjs").display(),
            self.issuer,
            self.audience
        )
    }

    /// The shell command that prints an operator's token from this provider.
    pub fn admin_command(&self) -> String {
        format!(
            "{} --admin --secret-file '{}'",
            self.token_command(),
            self.secret_file()
        )
    }

    /// The file holding the operator client's secret (mode 0600).
    fn secret_file(&self) -> String {
        self.keys
            .with_file_name("operator-secret")
            .display()
            .to_string()
    }

    /// Rotates the signing keys: new keys first, the old ones still published; returns the
    /// new RS256 key's id once the provider signs with it.
    pub async fn rotate(&self) -> String {
        let mut rotate = Command::new("node");
        rotate
            .arg(scripts().join("provider.mjs"))
            .arg("rotate")
            .env("OIDC_KEYS", &self.keys);
        let kid = crate::stdout_of(&mut rotate, "provider.mjs rotate")
            .await
            .trim()
            .to_owned();
        let pid = Pid::from_raw(self.child.id().expect("the provider runs") as i32);
        kill(pid, Signal::SIGHUP).expect("SIGHUP the provider");
        let jwks = format!("{}/jwks", self.issuer);
        crate::eventually(
            Duration::from_secs(10),
            "the rotated key to be published",
            || async {
                let set: Value = reqwest::get(&jwks).await.ok()?.json().await.ok()?;
                (set["keys"][0]["kid"] == kid.as_str()).then_some(())
            },
        )
        .await;
        kid
    }

    /// The provider's private keys as PEM: (kid, alg, pem), newest first.
    pub fn keys(&self) -> Vec<(String, String, String)> {
        let path = self.keys.with_file_name("keys.json.pem.json");
        let pems: serde_json::Map<String, Value> =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read the PEM file"))
                .expect("PEM file is JSON");
        let order: Value =
            serde_json::from_str(&std::fs::read_to_string(&self.keys).unwrap()).unwrap();
        order["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                let kid = k["kid"].as_str().unwrap().to_owned();
                let entry = &pems[&kid];
                (
                    kid,
                    entry["alg"].as_str().unwrap().to_owned(),
                    entry["pem"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// The provider's current key of `alg` (`RS256` or `ES256`): (kid, PEM).
    pub fn key(&self, alg: &str) -> (String, String) {
        self.keys()
            .into_iter()
            .find(|(_, a, _)| a == alg)
            .map(|(kid, _, pem)| (kid, pem))
            .unwrap_or_else(|| panic!("the provider has no {alg} key"))
    }

    /// Claims as the provider would issue them to `sub`: valid for an hour from now.
    pub fn claims(&self, sub: &str) -> Value {
        let now = unix_now();
        serde_json::json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "iat": now,
            "exp": now + 3600,
            "scope": "openid",
        })
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs() as i64
}

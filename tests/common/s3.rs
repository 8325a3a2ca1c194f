//! A real S3-compatible server for the tests: moto's standalone server (PyPI `moto[server]`,
//! which `.ci/run` installs), one per test binary, a fresh bucket per test.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

/// Where moto listens.
static SERVER: OnceCell<String> = OnceCell::const_new();

/// `moto_server`: from `MOTO_SERVER`, CI's virtual environment, or the PATH.
fn moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return path.into();
    }
    let ci = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ci-python/bin/moto_server");
    if ci.exists() {
        return ci;
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("moto_server")).find(|p| p.exists()));
    on_path.expect("moto_server is needed for the bucket tests: pip install 'moto[server]>=5.2.5' (or run .ci/run)")
}

async fn server() -> &'static str {
    SERVER.get_or_init(|| start_moto(&[])).await
}

/// Starts a moto server with `env`; returns its endpoint once it listens.
async fn start_moto(env: &[(&str, &str)]) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // A shell that kills moto when our end of its stdin closes, i.e. when the tests end.
    let script = format!("{} -H 127.0.0.1 -p {port} >/dev/null 2>&1 & read _; kill $!", moto_server().display());
    let child = std::process::Command::new("sh")
        .args(["-c", &script])
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .spawn()
        .expect("moto_server starts");
    // Keep its stdin open for the life of the test binary.
    std::mem::forget(child);
    // A connection, not a request: moto counts requests against INITIAL_NO_AUTH_ACTION_COUNT.
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "moto_server did not listen on port {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    format!("http://127.0.0.1:{port}")
}

/// A bucket of this test's own.
pub struct TestBucket {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket's name.
    pub name: String,
}

/// Credentials moto accepts (it checks none); never a real key.
pub const ACCESS_KEY: &str = "AKIATESTKEY0000000000";
/// The test secret key: it must appear in no output.
pub const SECRET_KEY: &str = "test-secret-key-0123456789abcdefghijklmn";

/// An IAM key of a [`TestBucket::with_policy`] bucket.
pub struct Key {
    /// `AWS_ACCESS_KEY_ID`.
    pub id: String,
    /// `AWS_SECRET_ACCESS_KEY`: it must appear in no output.
    pub secret: String,
}

impl Key {
    /// The environment that makes the tool use this key.
    pub fn env(&self) -> [(&'static str, &str); 2] {
        [("AWS_ACCESS_KEY_ID", &self.id), ("AWS_SECRET_ACCESS_KEY", &self.secret)]
    }
}

/// Requests a bucket on an IAM-checking moto may make unsigned, before every request needs a key
/// (`TestBucket::with_keys`' set-up takes one and three a key; the rest are the test's).
const UNCHECKED_REQUESTS: usize = 24;

impl TestBucket {
    /// Creates a fresh bucket (moto creates one for region `auto` only unsigned).
    pub async fn new() -> Self {
        Self::create(server().await.to_owned()).await
    }

    async fn create(endpoint: String) -> Self {
        let name = format!("drb-test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        // Unsigned, as moto needs it to make a bucket for region `auto`.
        let created = super::http_client().put(format!("{endpoint}/{name}")).send().await.unwrap();
        assert!(created.status().is_success(), "creating bucket {name}: {}", created.status());
        Self { endpoint, name }
    }

    /// A bucket on a moto of its own that checks every request against IAM, with a key whose
    /// policy allows `actions` (`s3:PutObject` …) on it. Until [`Self::enforce_keys`], this
    /// helper's own requests (planting objects) pass unchecked.
    pub async fn with_policy(actions: &[&str]) -> (Self, Key) {
        let (bucket, mut keys) = Self::with_keys(&[actions]).await;
        (bucket, keys.remove(0))
    }

    /// As [`Self::with_policy`], with a key for each list of actions (a user of its own each).
    pub async fn with_keys(policies: &[&[&str]]) -> (Self, Vec<Key>) {
        let count = UNCHECKED_REQUESTS.to_string();
        let bucket = Self::create(start_moto(&[("INITIAL_NO_AUTH_ACTION_COUNT", &count)]).await).await;
        let mut keys = Vec::new();
        for (n, actions) in policies.iter().enumerate() {
            let user = format!("user{n}");
            bucket.iam(&[("Action", "CreateUser"), ("UserName", &user)]).await;
            let created = bucket.iam(&[("Action", "CreateAccessKey"), ("UserName", &user)]).await;
            keys.push(Key {
                id: elements(&created, "AccessKeyId").remove(0),
                secret: elements(&created, "SecretAccessKey").remove(0),
            });
            let arn = format!("arn:aws:s3:::{}", bucket.name);
            let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": actions, "Resource": [arn.clone(), format!("{arn}/*")]}
            ]});
            let policy = policy.to_string();
            let form =
                [("Action", "PutUserPolicy"), ("UserName", &user), ("PolicyName", &user), ("PolicyDocument", &policy)];
            bucket.iam(&form).await;
        }
        (bucket, keys)
    }

    /// From now on every request needs a key: spends what is left of the unchecked ones.
    pub async fn enforce_keys(&self) {
        for _ in 0..UNCHECKED_REQUESTS {
            let url = format!("{}/{}?list-type=2", self.endpoint, self.name);
            if request(reqwest::Method::GET, url).send().await.unwrap().status() == reqwest::StatusCode::FORBIDDEN {
                return;
            }
        }
        panic!("moto never started checking keys");
    }

    /// An IAM call (unchecked, as the set-up's).
    async fn iam(&self, form: &[(&str, &str)]) -> String {
        let signature = ANY_SIGNATURE.replace("/auto/s3/", "/us-east-1/iam/");
        let mut form = form.to_vec();
        form.push(("Version", "2010-05-08"));
        let response = super::http_client().post(&self.endpoint).header("authorization", signature).form(&form).send();
        let response = response.await.unwrap();
        assert!(response.status().is_success(), "IAM {form:?}: {}", response.status());
        response.text().await.unwrap()
    }

    /// Starts a multipart upload of `key` (an upload a killed run would leave); its id.
    pub async fn start_upload(&self, key: &str) -> String {
        let url = format!("{}/{}/{key}?uploads", self.endpoint, self.name);
        let started = request(reqwest::Method::POST, url).send().await.unwrap();
        assert!(started.status().is_success(), "starting an upload of {key}: {}", started.status());
        elements(&started.text().await.unwrap(), "UploadId").remove(0)
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.name)
    }

    /// The settings `fly storage create` would set.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_ENDPOINT_URL_S3", self.endpoint.clone()),
            ("AWS_REGION", "auto".to_owned()),
            ("BUCKET_NAME", self.name.clone()),
        ]
    }

    /// Every key in the bucket, sorted (one page: the tests' buckets are small).
    pub async fn keys(&self) -> Vec<String> {
        let listing = self.get("?list-type=2&max-keys=1000").await;
        let mut keys = elements(&String::from_utf8(listing).unwrap(), "Key");
        keys.sort();
        keys
    }

    /// The multipart uploads in progress.
    pub async fn uploads_in_progress(&self) -> Vec<String> {
        elements(&String::from_utf8(self.get("?uploads").await).unwrap(), "UploadId")
    }

    /// The parts uploaded so far of an upload in progress.
    pub async fn parts(&self, key: &str, upload_id: &str) -> usize {
        elements(&String::from_utf8(self.get(&format!("/{key}?uploadId={upload_id}")).await).unwrap(), "PartNumber")
            .len()
    }

    /// An object's bytes (unsigned; moto allows it).
    pub async fn object(&self, key: &str) -> Vec<u8> {
        self.get(&format!("/{key}")).await
    }

    /// Replaces an object's bytes.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) {
        let put = request(reqwest::Method::PUT, format!("{}/{}/{key}", self.endpoint, self.name)).body(bytes).send();
        assert!(put.await.unwrap().status().is_success());
    }

    /// Deletes an object.
    pub async fn delete(&self, key: &str) {
        let deleted = request(reqwest::Method::DELETE, format!("{}/{}/{key}", self.endpoint, self.name)).send();
        assert!(deleted.await.unwrap().status().is_success());
    }

    async fn get(&self, path_and_query: &str) -> Vec<u8> {
        let url = format!("{}/{}{path_and_query}", self.endpoint, self.name);
        let response = request(reqwest::Method::GET, url).send().await.unwrap();
        assert!(response.status().is_success(), "GET {path_and_query}: {}", response.status());
        response.bytes().await.unwrap().to_vec()
    }
}

/// moto answers some unsigned requests (DELETE) 403, yet checks no signature: any will do.
const ANY_SIGNATURE: &str =
    "AWS4-HMAC-SHA256 Credential=AKIATESTKEY0000000000/20261201/auto/s3/aws4_request, SignedHeaders=host, Signature=0";

/// A request to moto as a test helper makes it.
fn request(method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
    super::http_client().request(method, url).header("authorization", ANY_SIGNATURE)
}

/// The text of every `<tag>…</tag>` in an S3 XML answer.
fn elements(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open).skip(1).filter_map(|rest| rest.split_once(&close).map(|(text, _)| text.to_owned())).collect()
}

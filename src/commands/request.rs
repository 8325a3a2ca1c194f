//! `request`: one signed request, for people trying the API by hand.

use std::io::{Read, Write};

use anyhow::{Context, bail};
use reqwest::Method;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue};

use crate::cli::RequestArgs;
use crate::client::{ApiClient, Call, parse_header};
use crate::config::SigningSecrets;
use crate::output;

/// Runs `request`.
pub async fn run(args: RequestArgs) -> anyhow::Result<()> {
    let secrets = SigningSecrets::from_setting(args.signing_secret.as_ref())?;
    let method = Method::from_bytes(args.method.to_uppercase().as_bytes())
        .with_context(|| format!("`{}` is not an HTTP method", args.method))?;
    if !args.path.starts_with('/') {
        bail!("the path must start with / (e.g. /api/users/me)");
    }
    let client = ApiClient::new(&args.url, secrets.signing(), args.timeout.0)?;

    let mut headers = HeaderMap::new();
    for text in &args.headers {
        let (name, value) = parse_header(text)?;
        headers.append(name, value);
    }
    let mut body = match &args.data {
        Some(data) => read_data(data)?,
        None => Vec::new(),
    };
    if args.data.is_some() && !headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if args.gzip {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&body).context("could not gzip the body")?;
        body = encoder.finish().context("could not gzip the body")?;
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }

    let token = args.token.as_ref().map(|token| token.expose());
    let call = Call { path_and_query: &args.path, body, token, headers };
    let response = client.send(method, call).await?;
    let status = response.status();
    if args.include {
        let mut head = format!("{:?} {status}\n", response.version());
        for (name, value) in response.headers() {
            head.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("<binary>")));
        }
        eprintln!("{head}");
    }
    let bytes = response.bytes().await.context("could not read the answer")?;
    output::write_body(&bytes).context("could not write the answer")?;
    if status.is_client_error() || status.is_server_error() {
        bail!("the server answered {status}");
    }
    Ok(())
}

fn read_data(data: &str) -> anyhow::Result<Vec<u8>> {
    match data.strip_prefix('@') {
        Some("-") => {
            let mut body = Vec::new();
            std::io::stdin().read_to_end(&mut body).context("could not read the body from stdin")?;
            Ok(body)
        }
        Some(path) => std::fs::read(path).with_context(|| format!("could not read {path}")),
        None => Ok(data.as_bytes().to_vec()),
    }
}

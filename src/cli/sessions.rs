//! `sessiongate sessions list|revoke`: a client of a running instance's
//! admin API (the management endpoints behind `admin.token`). The admin
//! URL comes from `--admin` or the config's `admin.addr`; the token from
//! `SESSIONGATE_ADMIN_TOKEN` or the config's `admin.token`. With both
//! `--admin` and the variable, no config file is read.

use bytes::Bytes;
use clap::Subcommand;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

pub const TOKEN_VAR: &str = "SESSIONGATE_ADMIN_TOKEN";
/// How long the CLI waits for the admin API before it gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List a subject's live sessions, newest first.
    // Sids are base64url and may start with '-', as may a subject: the
    // values are taken as given, never as a flag.
    List {
        #[arg(long, allow_hyphen_values = true)]
        subject: String,
    },
    /// Revoke every session of a subject, or one session by its sid.
    Revoke {
        #[arg(
            long,
            required_unless_present = "sid",
            conflicts_with = "sid",
            allow_hyphen_values = true
        )]
        subject: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        sid: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the admin API at {0}")]
    Connect(String, #[source] std::io::Error),
    #[error("the admin API at {0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("talking to the admin API failed")]
    Http(#[source] hyper::Error),
    #[error("the admin API refused the token (401): check {TOKEN_VAR} or admin.token")]
    Unauthorized,
    #[error("the admin API answered {0}: {1}")]
    Status(StatusCode, String),
}

/// Where the admin API is and the token it wants.
struct Target {
    /// host:port
    authority: String,
    token: String,
}

fn target(admin: Option<String>, config_path: &Path) -> Result<Target, CliError> {
    let env_token = std::env::var(TOKEN_VAR).ok().filter(|t| !t.is_empty());
    let config = match (&admin, &env_token) {
        (Some(_), Some(_)) => None,
        _ => Some(crate::config::load(config_path).map_err(|e| {
            CliError::Usage(format!(
                "invalid config {} (give --admin and {TOKEN_VAR} to go without one):\n{e}",
                config_path.display()
            ))
        })?),
    };
    let admin_cfg = config.as_ref().and_then(|c| c.admin.as_ref());
    let authority = match admin {
        Some(url) => {
            let rest = url.strip_prefix("http://").unwrap_or(&url);
            if rest.contains("://") {
                return Err(CliError::Usage(format!(
                    "--admin {url}: the admin listener speaks plain http://"
                )));
            }
            rest.trim_end_matches('/').to_string()
        }
        None => {
            let addr = admin_cfg
                .map(|a| a.addr)
                .ok_or_else(|| CliError::Usage("no admin listener configured".into()))?;
            // A listener on every interface is reached on loopback.
            let ip = if addr.ip().is_unspecified() {
                std::net::IpAddr::from([127, 0, 0, 1])
            } else {
                addr.ip()
            };
            std::net::SocketAddr::new(ip, addr.port()).to_string()
        }
    };
    let token = match env_token {
        Some(t) => t,
        None => admin_cfg
            .and_then(|a| a.token.as_ref())
            .map(|t| String::from_utf8_lossy(t.expose()).into_owned())
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "no admin token: set {TOKEN_VAR} or admin.token in the config"
                ))
            })?,
    };
    Ok(Target { authority, token })
}

/// One request to the admin API; the status and the body.
async fn call(t: &Target, method: Method, path: &str) -> Result<(StatusCode, Bytes), CliError> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(&t.authority)
            .await
            .map_err(|e| CliError::Connect(t.authority.clone(), e))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(CliError::Http)?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &t.authority)
            .header(http::header::AUTHORIZATION, format!("Bearer {}", t.token))
            .body(Full::new(Bytes::new()))
            // Never the value itself: it may be the token.
            .map_err(|_| {
                CliError::Usage(
                    "the admin token or the --admin address cannot be sent in an HTTP request \
                     (a control character, a space or a byte that is not text?)"
                        .into(),
                )
            })?;
        let resp = sender.send_request(req).await.map_err(CliError::Http)?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(CliError::Http)?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| CliError::Timeout(t.authority.clone(), REQUEST_TIMEOUT))?
}

/// The API's answer, or its error as the message it carries.
fn expect(status: StatusCode, body: &Bytes, ok: StatusCode) -> Result<(), CliError> {
    if status == ok {
        return Ok(());
    }
    if status == StatusCode::UNAUTHORIZED {
        return Err(CliError::Unauthorized);
    }
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    Err(CliError::Status(status, message))
}

fn utc(seconds: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(seconds.min(i64::MAX as u64) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The table people read.
fn table(subject: &str, sessions: &[serde_json::Value]) -> String {
    let mut out = format!(
        "{:<24}  {:<19}  {:<19}\n",
        "SID", "CREATED (UTC)", "EXPIRES (UTC)"
    );
    for s in sessions {
        let when = |k: &str| s[k].as_u64().map(utc).unwrap_or_default();
        out.push_str(&format!(
            "{:<24}  {:<19}  {:<19}\n",
            s["sid"].as_str().unwrap_or(""),
            when("created"),
            when("expires")
        ));
    }
    let n = sessions.len();
    out.push_str(&format!(
        "{n} live session{} of {subject}\n",
        if n == 1 { "" } else { "s" }
    ));
    out
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

async fn run(command: SessionsCommand, t: &Target, json: bool) -> Result<String, CliError> {
    match command {
        SessionsCommand::List { subject } => {
            let path = format!("/sessions?subject={}", encode(&subject));
            let (status, body) = call(t, Method::GET, &path).await?;
            expect(status, &body, StatusCode::OK)?;
            if json {
                return Ok(String::from_utf8_lossy(&body).into_owned());
            }
            let v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|_| CliError::Status(status, "not JSON".into()))?;
            let sessions = v["sessions"].as_array().cloned().unwrap_or_default();
            Ok(table(&subject, &sessions))
        }
        SessionsCommand::Revoke {
            subject: Some(subject),
            ..
        } => {
            let path = format!("/sessions?subject={}", encode(&subject));
            let (status, body) = call(t, Method::DELETE, &path).await?;
            expect(status, &body, StatusCode::OK)?;
            if json {
                return Ok(String::from_utf8_lossy(&body).into_owned());
            }
            let n = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["revoked"].as_u64())
                .unwrap_or(0);
            Ok(format!(
                "revoked {n} session{} of {subject}\n",
                if n == 1 { "" } else { "s" }
            ))
        }
        SessionsCommand::Revoke { sid: Some(sid), .. } => {
            let (status, body) =
                call(t, Method::DELETE, &format!("/sessions/{}", encode(&sid))).await?;
            expect(status, &body, StatusCode::NO_CONTENT)?;
            Ok(if json {
                "{\"revoked\":1}\n".to_string()
            } else {
                format!("revoked 1 session (sid {sid})\n")
            })
        }
        SessionsCommand::Revoke { .. } => Err(CliError::Usage("give --subject or --sid".into())),
    }
}

pub async fn main(
    command: SessionsCommand,
    admin: Option<String>,
    json: bool,
    config_path: &Path,
) -> ExitCode {
    let result = match target(admin, config_path) {
        Ok(t) => run(command, &t, json).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(out) => {
            print!("{out}");
            if !out.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sessiongate: {}", crate::logging::Chain(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sid_or_subject_starting_with_a_hyphen_is_a_value() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "sessiongate",
            "sessions",
            "revoke",
            "--sid",
            "-pQx4kVb1Z2m0aBcDeFgHi",
        ])
        .unwrap();
        let Some(crate::cli::Command::Sessions { command, .. }) = cli.command else {
            panic!("{cli:?}")
        };
        assert!(
            matches!(command, SessionsCommand::Revoke { sid: Some(ref s), .. } if s == "-pQx4kVb1Z2m0aBcDeFgHi"),
            "{command:?}"
        );
        let cli =
            crate::cli::Cli::try_parse_from(["sessiongate", "sessions", "list", "--subject", "-7"])
                .unwrap();
        assert!(format!("{cli:?}").contains("\"-7\""), "{cli:?}");
    }

    #[test]
    fn the_table_names_each_session_and_counts_them() {
        let rows = [serde_json::json!({"sid": "abc", "created": 0, "expires": 86_400})];
        let t = table("alice", &rows);
        assert!(t.contains("abc"), "{t}");
        assert!(t.contains("1970-01-01 00:00:00"), "{t}");
        assert!(t.contains("1970-01-02 00:00:00"), "{t}");
        assert!(t.ends_with("1 live session of alice\n"), "{t}");
    }
}

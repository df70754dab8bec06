//! The admin plane: a separate listener (default `127.0.0.1:9901`) on its
//! own thread and runtime, so a flood of client traffic cannot starve it and
//! it cannot slow the workers. It only reads what the request path and the
//! control thread publish, and asks the control thread for reloads.
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /` | the dashboard: one self-contained page that reads the endpoints below |
//! | `GET /healthz` | 200 `{"status":"ok"}` while the process runs |
//! | `GET /readyz` | 200 once every Docker backend has been listed; 503 with the reason before that and while draining |
//! | `GET /stats` | the main port's `/stats` document (lifetime, or `?window=5m`) |
//! | `GET /metrics` | Prometheus metrics: OpenMetrics when asked for, else the classic text format |
//! | `GET /routes` | the route table in precedence order, with the config version |
//! | `GET /backends` | every backend, its endpoints and their state |
//! | `POST /config/reload` | 200 with the new version, or 400 with every problem (the old config keeps serving) |

pub mod probe;
pub mod scrape;
pub mod views;

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::thread;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use self::views::{BackendsView, RoutesView};
use crate::control::{ReloadError, ReloadRequest};
use crate::observe::metrics::ReloadCounts;
use crate::observe::stats::{self, Stats};
use crate::snapshot::SnapshotHandle;
use prometheus_client::registry::Registry;

/// What the admin plane reads and whom it asks.
#[derive(Debug, Clone)]
pub(crate) struct AdminState {
    pub(crate) snapshot: Arc<SnapshotHandle>,
    pub(crate) stats: Stats,
    pub(crate) reload: mpsc::Sender<ReloadRequest>,
    /// True once the workers drain.
    pub(crate) draining: watch::Receiver<bool>,
    pub(crate) reloads: Arc<ReloadCounts>,
    pub(crate) access_log: Option<Arc<crate::observe::access_log::AccessLog>>,
    pub(crate) docker_counts: Arc<crate::observe::metrics::DockerCounts>,
}

/// Serves the admin plane on `listener` in its own thread until `stop`.
pub(crate) fn spawn(
    listener: std::net::TcpListener,
    state: AdminState,
    mut stop: watch::Receiver<bool>,
) -> io::Result<thread::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    thread::Builder::new()
        .name("rgate-admin".into())
        .spawn(move || {
            let runtime = match crate::server::current_thread_runtime() {
                Ok(runtime) => runtime,
                Err(error) => {
                    warn!(%error, "cannot start the admin runtime; the admin plane is off");
                    return;
                }
            };
            runtime.block_on(async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(error) => {
                        warn!(%error, "admin listener unusable; the admin plane is off");
                        return;
                    }
                };
                if let Ok(addr) = listener.local_addr() {
                    info!(%addr, "admin plane listening");
                }
                let registry = scrape::registry(
                    state.snapshot.clone(),
                    state.stats.clone(),
                    state.reloads.clone(),
                    state.access_log.clone(),
                    state.docker_counts.clone(),
                );
                let state = Arc::new((state, registry));
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let state = state.clone();
                            tokio::spawn(async move {
                                let service = service_fn(move |request| {
                                    let state = state.clone();
                                    async move {
                                        let (admin, registry) = &*state;
                                        Ok::<_, Infallible>(admin.handle(request, registry).await)
                                    }
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                        _ = stop.changed() => return,
                    }
                }
            });
        })
}

type Answer = Response<Full<Bytes>>;

impl AdminState {
    async fn handle(&self, request: Request<Incoming>, registry: &Registry) -> Answer {
        let method = request.method().clone();
        let read = method == Method::GET || method == Method::HEAD;
        match (request.uri().path(), read, method == Method::POST) {
            ("/", true, _) => dashboard(),
            ("/healthz", true, _) => json(
                StatusCode::OK,
                &Status {
                    status: "ok",
                    reason: None,
                },
            ),
            ("/readyz", true, _) => self.readiness(),
            ("/stats", true, _) => {
                let snapshot = self.snapshot.load_full();
                let (status, body) =
                    stats::respond(self.stats.answer(request.uri().query(), &snapshot).await);
                json_body(status, body)
            }
            ("/metrics", true, _) => {
                let openmetrics = request
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|accept| accept.to_str().ok())
                    .is_some_and(|accept| accept.contains("application/openmetrics-text"));
                let (text, content_type) = scrape::encode(registry, openmetrics);
                let mut answer = Response::new(Full::new(Bytes::from(text)));
                answer
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                answer
            }
            ("/routes", true, _) => json(StatusCode::OK, &RoutesView::new(&self.snapshot.load())),
            ("/backends", true, _) => {
                json(StatusCode::OK, &BackendsView::new(&self.snapshot.load()))
            }
            ("/config/reload", _, true) => self.reload().await,
            (
                "/" | "/healthz" | "/readyz" | "/stats" | "/metrics" | "/routes" | "/backends",
                false,
                _,
            ) => refuse_method("GET, HEAD"),
            ("/config/reload", _, false) => refuse_method("POST"),
            _ => json(StatusCode::NOT_FOUND, &ErrorBody { error: "not_found" }),
        }
    }

    fn readiness(&self) -> Answer {
        if *self.draining.borrow() {
            return not_ready("draining".to_owned());
        }
        let snapshot = self.snapshot.load();
        let waiting: Vec<&str> = snapshot
            .backends
            .iter()
            .filter(|backend| !backend.listed())
            .map(|backend| &*backend.name)
            .collect();
        if waiting.is_empty() {
            json(
                StatusCode::OK,
                &Status {
                    status: "ready",
                    reason: None,
                },
            )
        } else {
            not_ready(format!(
                "Docker backends not listed yet: {}",
                waiting.join(", ")
            ))
        }
    }

    async fn reload(&self) -> Answer {
        let (reply, result) = oneshot::channel();
        if self.reload.send(reply).await.is_err() {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                &ErrorBody { error: "stopping" },
            );
        }
        match result.await.unwrap_or(Err(ReloadError::Stopped)) {
            Ok(report) => json(
                StatusCode::OK,
                &Reloaded {
                    version: self.snapshot.load().version,
                    routes: report.routes,
                    backends: report.backends,
                },
            ),
            Err(ReloadError::Invalid(errors)) => json(
                StatusCode::BAD_REQUEST,
                &Refused {
                    error: "invalid_config",
                    problems: errors
                        .0
                        .iter()
                        .map(|e| Problem {
                            file: e.file.display().to_string(),
                            path: &e.path,
                            problem: &e.problem,
                        })
                        .collect(),
                },
            ),
            Err(ReloadError::NoConfigFile) => json(
                StatusCode::CONFLICT,
                &ErrorBody {
                    error: "no_config_file",
                },
            ),
            Err(ReloadError::Stopped) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                &ErrorBody { error: "stopping" },
            ),
        }
    }
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
}

#[derive(Serialize)]
struct Reloaded {
    version: u64,
    routes: usize,
    backends: usize,
}

#[derive(Serialize)]
struct Refused<'a> {
    error: &'static str,
    problems: Vec<Problem<'a>>,
}

#[derive(Serialize)]
struct Problem<'a> {
    file: String,
    path: &'a str,
    problem: &'a str,
}

fn not_ready(reason: String) -> Answer {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        &Status {
            status: "not_ready",
            reason: Some(reason),
        },
    )
}

/// The dashboard page. Everything it needs is inline (the machine may be
/// offline), and its policy lets it talk to this origin only.
fn dashboard() -> Answer {
    static PAGE: &str = include_str!("dashboard.html");
    let mut answer = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    let headers = answer.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    answer
}

fn refuse_method(allow: &'static str) -> Answer {
    let mut answer = json(
        StatusCode::METHOD_NOT_ALLOWED,
        &ErrorBody {
            error: "method_not_allowed",
        },
    );
    answer
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    answer
}

fn json(status: StatusCode, body: &impl Serialize) -> Answer {
    json_body(status, serde_json::to_vec(body).unwrap_or_default())
}

fn json_body(status: StatusCode, body: Vec<u8>) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    answer
}

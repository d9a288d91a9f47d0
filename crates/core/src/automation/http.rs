//! The daemon's HTTP endpoint, on hyper: `GET /metrics` (Prometheus text) and `GET /healthz`;
//! anything else is refused (404, or 405 for another method).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

/// What answers `/metrics`: the text, or an error message (answered with 500).
pub type Metrics = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send>>
        + Send
        + Sync,
>;

/// Serves on `listener` until `stop`.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Metrics, stop: CancellationToken) {
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(e) => {
                    tracing::debug!(error = %e, "accepting a connection");
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request| answer(request, metrics.clone()));
            // A client that sends no request within 5 s is let go (the timeout needs a timer).
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(TokioIo::new(socket), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "serving a connection");
            }
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    metrics: Metrics,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    if !matches!(path, "/metrics" | "/healthz") {
        return Ok(text(
            StatusCode::NOT_FOUND,
            "try /metrics or /healthz\n".into(),
        ));
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
        response.headers_mut().insert(
            hyper::header::ALLOW,
            "GET, HEAD".parse().expect("a valid header"),
        );
        return Ok(response);
    }
    Ok(match path {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        _ => match metrics().await {
            Ok(body) => {
                let mut response = text(StatusCode::OK, body);
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8"
                        .parse()
                        .expect("a valid header"),
                );
                response
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        },
    })
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        "text/plain; charset=utf-8".parse().expect("a valid header"),
    );
    response
}

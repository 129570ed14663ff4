//! Reading a relay's answers through [`cairn_api`]: statuses become
//! [`RelayError::Refused`], bodies are read within a bound, and answers
//! are the typed [`cairn_proto::wire`] forms. A request that never reached
//! the relay becomes [`RelayError::Unreachable`], its cause named from the
//! typed errors under reqwest's ([`cairn_api::net_failure`]).

use cairn_api::CallError;
use serde::de::DeserializeOwned;

use crate::error::RelayError;

/// Largest head record or info document accepted.
pub(super) const MAX_SMALL_BODY: usize = 256 * 1024;

impl From<CallError> for RelayError {
    fn from(err: CallError) -> Self {
        match err {
            CallError::Unreachable { why, detail } => Self::Unreachable { why, detail },
            CallError::Refused(refusal) => {
                let cairn_api::Refusal {
                    status,
                    code,
                    message,
                    retry_after,
                    ..
                } = *refusal;
                Self::Refused {
                    status,
                    code,
                    message,
                    retry_after,
                }
            }
            err @ (CallError::TooLarge { .. } | CallError::Malformed { .. }) => {
                Self::Protocol(err.to_string())
            }
        }
    }
}

/// Sends a request; non-success statuses become [`RelayError::Refused`].
pub(super) async fn send(
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, RelayError> {
    check_status(send_only(request).await?).await
}

/// Sends a request and passes on whatever status comes back.
pub(super) async fn send_only(
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, RelayError> {
    request.send().await.map_err(|err| unreachable(&err))
}

/// A request that did not reach the relay, or an answer cut off: its
/// cause in words, and reqwest's account (with its causes) as the detail.
pub(super) fn unreachable(err: &reqwest::Error) -> RelayError {
    CallError::unreachable(err).into()
}

pub(super) async fn check_status(
    response: reqwest::Response,
) -> Result<reqwest::Response, RelayError> {
    Ok(cairn_api::check_status(response).await?)
}

pub(super) async fn small_body(response: reqwest::Response) -> Result<bytes::Bytes, RelayError> {
    bounded_body(response, MAX_SMALL_BODY).await
}

/// Reads a body, refusing to buffer more than `max` bytes.
pub(super) async fn bounded_body(
    response: reqwest::Response,
    max: usize,
) -> Result<bytes::Bytes, RelayError> {
    Ok(cairn_api::read_bounded(response, max).await?)
}

/// Reads a JSON answer within `max` bytes.
pub(super) async fn json_answer<T: DeserializeOwned>(
    response: reqwest::Response,
    max: usize,
    what: &'static str,
) -> Result<T, RelayError> {
    Ok(cairn_api::read_json(response, max, what).await?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use tokio::io::AsyncWriteExt as _;

    use super::*;
    use crate::error::NetFailure;

    /// A client that gives up on a silent relay quickly.
    fn http() -> reqwest::Client {
        // Installs the TLS provider the https case needs.
        crate::relay::http_client().unwrap();
        reqwest::Client::builder()
            .read_timeout(Duration::from_millis(300))
            .build()
            .unwrap()
    }

    /// A loopback listener that does `each` with every connection.
    async fn listener<F, Fut>(each: F) -> std::net::SocketAddr
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(each(stream));
            }
        });
        addr
    }

    async fn why(url: String) -> (NetFailure, String) {
        let err = send(http().get(url)).await.unwrap_err();
        match err {
            RelayError::Unreachable { why, detail } => (why, detail),
            other => panic!("not unreachable: {other}"),
        }
    }

    /// Issue "Messages a person reads": each way of not reaching a relay
    /// is named in plain words, with reqwest's chain kept as the detail.
    #[tokio::test]
    async fn each_way_of_not_reaching_a_relay_is_named() {
        // A port nothing listens on any more.
        let closed = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap()
        };
        let (refused, detail) = why(format!("http://{closed}/x")).await;
        assert_eq!(refused, NetFailure::ConnectionRefused);
        assert!(detail.contains("Connection refused"), "{detail}");

        // `.invalid` never resolves (RFC 6761), with or without a network.
        let (dns, _) = why("http://relay.invalid/x".into()).await;
        assert_eq!(dns, NetFailure::DnsFailed);

        // Accepts and says nothing.
        let silent = listener(|stream| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(stream);
        })
        .await;
        assert_eq!(
            why(format!("http://{silent}/x")).await.0,
            NetFailure::TimedOut
        );

        // Plain HTTP where TLS is expected.
        let plain = listener(|mut stream| async move {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        })
        .await;
        assert_eq!(
            why(format!("https://{plain}/x")).await.0,
            NetFailure::TlsFailed
        );

        // Accepts, then resets the connection.
        let resets = listener(|stream| async move {
            #[allow(deprecated, reason = "the only way to send a reset")]
            let _ = stream.set_linger(Some(Duration::ZERO));
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(stream);
        })
        .await;
        assert_eq!(
            why(format!("http://{resets}/x")).await.0,
            NetFailure::ConnectionReset
        );
    }
}

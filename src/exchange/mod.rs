//! One request/response exchange with an HTTP/1.1 backend, as a state
//! machine with no I/O inside.
//!
//! The I/O shells (HTTP/1.1 clients in `proxy`; HTTP/2 streams drive the
//! same machine) feed it what the client and the backend sent and do what it
//! answers: which bytes go to the backend, when to send `100 Continue`, how
//! the response is framed for this client, whether the client connection
//! stays open, whether the backend connection is clean enough to pool, and,
//! when the backend connection breaks, whether the request may be sent again
//! (the verdict is in the returned [`Error`]). Time is not its business: the
//! shells keep the deadlines. Tested byte by byte in `tests.rs`.
//!
//! Before the exchange, [`plan`] turns a request head into a route, a policy
//! verdict and the head the backend gets.

mod identity_headers;
pub mod plan;

#[cfg(test)]
mod tests;

use crate::error::{Cause, Delivery, Error, Kind};
use crate::http::reframe::{Fed, Input, Output, Reframer};
use crate::http::response::{parse_response, Response};
use crate::http::{BodyFraming, HttpError, Limits, Parsed};

/// How the client speaks: decides how a response body is framed for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientProtocol {
    Http10,
    Http11,
    /// Each stream gets bare payload (DATA frames); the connection outlives it.
    Http2,
}

/// What the exchange needs to know of the planned request.
#[derive(Clone, Debug)]
pub struct RequestFacts {
    pub protocol: ClientProtocol,
    /// How the client sends the body.
    pub body_in: Input,
    /// How the backend head says it comes (`Raw` for a Content-Length).
    pub body_out: Output,
    /// Largest body the route takes (checked as payload arrives).
    pub max_body: u64,
    /// RFC 9110 section 9.2.2: may be sent again when its connection broke.
    pub idempotent: bool,
    /// A HEAD: the response has no body whatever its head says.
    pub is_head: bool,
    pub expect_continue: bool,
    /// The client asked to keep its connection (HTTP/1.x).
    pub keep_alive: bool,
}

/// What a look at the backend's bytes found.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadStep {
    /// The head is not complete yet: read more.
    NeedMore,
    /// A 1xx interim response of this many bytes, consumed and not relayed.
    Interim(usize),
    /// The final head, `usize` bytes long: the client's head was written.
    Head(usize),
}

/// How the client gets the response, decided when its head arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientResponse {
    /// The framing the client's head announces (HTTP/1.x).
    pub framing: BodyFraming,
    /// Whether the client connection stays open after it.
    pub keep_alive: bool,
}

#[derive(Debug)]
pub struct Exchange {
    facts: RequestFacts,
    request: Reframer,
    head_written: bool,
    continue_sent: bool,
    response: Phase,
    /// Any byte of a response arrived on this attempt.
    response_bytes: bool,
}

#[derive(Debug)]
enum Phase {
    AwaitingHead,
    Body {
        body: Reframer,
        backend_keep: bool,
        client: ClientResponse,
    },
}

impl Exchange {
    pub fn new(facts: RequestFacts) -> Exchange {
        let request = Reframer::new(facts.body_in.clone(), facts.body_out);
        Exchange {
            facts,
            request,
            head_written: false,
            continue_sent: false,
            response: Phase::AwaitingHead,
            response_bytes: false,
        }
    }

    pub fn facts(&self) -> &RequestFacts {
        &self.facts
    }

    /// A new attempt on a fresh backend connection (after [`Error::retry_safe`]).
    /// Only ever before a body byte was sent, so the request side starts over.
    pub fn restart(&mut self) {
        self.request = Reframer::new(self.facts.body_in.clone(), self.facts.body_out);
        self.head_written = false;
        self.response = Phase::AwaitingHead;
        self.response_bytes = false;
    }

    // --- The request ---------------------------------------------------------

    pub fn head_written(&mut self) {
        self.head_written = true;
    }

    /// Whether a request body comes after the head.
    pub fn has_request_body(&self) -> bool {
        !self.request.is_done()
    }

    /// Whether to send `100 Continue` now: once, for a client that asked and
    /// has not started its body (`client_bytes_waiting`).
    pub fn wants_continue(&mut self, client_bytes_waiting: bool) -> bool {
        let due = self.facts.expect_continue
            && self.has_request_body()
            && !client_bytes_waiting
            && !self.continue_sent
            && self.facts.protocol != ClientProtocol::Http10;
        self.continue_sent |= due;
        due
    }

    /// Takes client body bytes (in the client's framing) from the start of
    /// `input`: what the backend must get is `input[fed.pass]` and then
    /// `out`. Call again with the rest while it consumes and is not done.
    pub fn request_body(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Fed, Error> {
        let fed = self.request.feed(input, out).map_err(|e| match e {
            HttpError::InvalidContentLength => Error::bad_request(HttpError::InvalidContentLength),
            other => Error::bad_request(other),
        })?;
        if self.request_payload() > self.facts.max_body {
            return Err(Error::new(Kind::BodyTooLarge));
        }
        Ok(fed)
    }

    /// The client's body ended (an HTTP/2 END_STREAM): the terminator the
    /// backend needs goes to `out`; a body shorter than announced is refused.
    pub fn request_body_end(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.request
            .end_of_input(true, out)
            .map_err(Error::bad_request)
    }

    /// `n` body bytes went from the client to the backend by splice.
    pub fn request_body_spliced(&mut self, n: u64) {
        self.request.skipped(n);
    }

    /// For a Content-Length body: the bytes still to come from the client.
    pub fn request_remaining(&self) -> Option<u64> {
        self.request.remaining()
    }

    pub fn request_done(&self) -> bool {
        self.request.is_done()
    }

    fn request_payload(&self) -> u64 {
        self.request.payload_bytes()
    }

    /// Whether a byte of the body has gone to the backend (it cannot be replayed).
    pub fn body_started(&self) -> bool {
        self.request_payload() > 0
    }

    // --- The response --------------------------------------------------------

    /// Parses the backend's bytes. On the final head, `write_head` gets the
    /// parsed head and how the client gets it (the shell writes its own
    /// head from them). Interim 1xx heads are consumed; 101 is refused.
    pub fn response_head<'b>(
        &mut self,
        buf: &'b [u8],
        limits: &Limits,
        draining: bool,
        write_head: impl FnOnce(&Response<'_, 'b>, ClientResponse),
    ) -> Result<HeadStep, Error> {
        if !buf.is_empty() {
            self.response_bytes = true;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let resp = match parse_response(buf, &mut headers, limits, self.facts.is_head) {
            Ok(Parsed::Complete(resp)) => resp,
            Ok(Parsed::Partial) => return Ok(HeadStep::NeedMore),
            Err(e) => return Err(Error::invalid_response(e)),
        };
        if resp.status == 101 {
            return Err(Error::invalid_response(HttpError::Malformed(
                "backend switched protocols, which is not supported",
            )));
        }
        if (100..200).contains(&resp.status) {
            return Ok(HeadStep::Interim(resp.head_len));
        }
        let client = self.client_response(resp.framing, draining);
        let (input, output) = self.response_framing(resp.framing);
        self.response = Phase::Body {
            body: Reframer::new(input, output),
            backend_keep: resp.keep_alive,
            client,
        };
        let len = resp.head_len;
        write_head(&resp, client);
        Ok(HeadStep::Head(len))
    }

    /// How the client gets a body the backend framed as `backend`.
    fn client_response(&self, backend: BodyFraming, draining: bool) -> ClientResponse {
        let framing = match (backend, self.facts.protocol) {
            // An HTTP/1.0 client cannot read chunked: bare payload, and the
            // connection's end marks the body's.
            (BodyFraming::Chunked, ClientProtocol::Http10) => BodyFraming::UntilClose,
            (other, _) => other,
        };
        let keep_alive = match self.facts.protocol {
            ClientProtocol::Http2 => !draining,
            _ => self.facts.keep_alive && framing != BodyFraming::UntilClose && !draining,
        };
        ClientResponse {
            framing,
            keep_alive,
        }
    }

    fn response_framing(&self, backend: BodyFraming) -> (Input, Output) {
        let input = match backend {
            BodyFraming::None => Input::Length(0),
            BodyFraming::ContentLength(n) => Input::Length(n),
            BodyFraming::Chunked => Input::Chunked,
            BodyFraming::UntilClose => Input::UntilClose,
        };
        let output = match (backend, self.facts.protocol) {
            (BodyFraming::Chunked, ClientProtocol::Http11) => Output::Chunked,
            _ => Output::Raw,
        };
        (input, output)
    }

    /// How the client gets the response (after its head arrived).
    pub fn client(&self) -> Option<ClientResponse> {
        match &self.response {
            Phase::Body { client, .. } => Some(*client),
            Phase::AwaitingHead => None,
        }
    }

    /// Takes response body bytes from the start of `input`: the client gets
    /// `input[fed.pass]` and then `out`. A framing error before anything of
    /// the body reached the client is still a 502 (the shell knows).
    pub fn response_body(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Fed, Error> {
        match &mut self.response {
            Phase::Body { body, .. } => body.feed(input, out).map_err(Error::invalid_response),
            Phase::AwaitingHead => Err(Error::invalid_response(HttpError::Malformed(
                "response body before its head",
            ))),
        }
    }

    /// `n` response body bytes went to the client by splice.
    pub fn response_body_spliced(&mut self, n: u64) {
        if let Phase::Body { body, .. } = &mut self.response {
            body.skipped(n);
        }
    }

    /// For a Content-Length response: the bytes still to come.
    pub fn response_remaining(&self) -> Option<u64> {
        match &self.response {
            Phase::Body { body, .. } => body.remaining(),
            Phase::AwaitingHead => None,
        }
    }

    pub fn response_done(&self) -> bool {
        matches!(&self.response, Phase::Body { body, .. } if body.is_done())
    }

    /// The backend closed its side. `clean` is false for a TLS backend that
    /// sent no close_notify: a close-delimited body may have been cut off by
    /// anyone on the path, so it must not end as a complete response.
    pub fn backend_closed(&mut self, clean: bool, out: &mut Vec<u8>) -> Result<(), Error> {
        match &mut self.response {
            Phase::Body { body, .. } => body.end_of_input(clean, out).map_err(|_| {
                Error::with_cause(
                    Kind::BackendReset,
                    Cause::Text(if clean {
                        "backend closed mid-body"
                    } else {
                        "TLS backend ended a close-delimited body without close_notify (truncated)"
                    }),
                )
            }),
            Phase::AwaitingHead => Err(self.closed_before_head()),
        }
    }

    /// The backend closed before a final response head: whether the request
    /// may go again is [`Exchange::backend_broke`]'s rule, as for any break.
    pub fn closed_before_head(&self) -> Error {
        self.backend_broke(
            Kind::BackendReset,
            Cause::Text("backend closed the connection"),
        )
    }

    // --- Failures and outcome ------------------------------------------------

    /// The backend connection broke (a read or write failed, or it closed
    /// early). Before any byte of a response, the error says whether the
    /// request may be sent again ([`Error::retry_safe`]).
    pub fn backend_broke(&self, kind: Kind, cause: Cause) -> Error {
        if self.response_bytes {
            return Error::with_cause(kind, cause);
        }
        Error::backend_gone(
            kind,
            cause,
            Delivery {
                head_written: self.head_written,
                body_started: self.body_started(),
                idempotent: self.facts.idempotent,
            },
        )
    }

    /// Whether the backend connection may serve another request: its response
    /// ended exactly where its framing said, with nothing after it, and the
    /// request body was sent whole.
    pub fn backend_reusable(&self, leftover: bool) -> bool {
        match &self.response {
            Phase::Body {
                body, backend_keep, ..
            } => body.is_done() && *backend_keep && !leftover && self.request.is_done(),
            Phase::AwaitingHead => false,
        }
    }

    /// Whether the client connection stays open after a complete response.
    pub fn client_keep_alive(&self) -> bool {
        self.client().is_some_and(|c| c.keep_alive) && self.response_done()
    }
}

/// Header slots for a backend's response head.
pub const MAX_RESPONSE_HEADERS: usize = 512;

//! Control requests: one ZeroMQ REQ/REP exchange per command, JSON both ways.
//!
//! `ssdaqd --control` and `tm-ss-sim --control` both serve this, and
//! `ssdaq-ctl` / `tm-ss-sim ctl` are its clients; any ZeroMQ REQ client
//! (Python's `zmq.REQ`, `zmq_req`) can speak it too:
//!
//! ```text
//! request:  {"command": "start-run", "args": ["42"]}     (or the plain text `start-run 42`)
//! reply:    {"ok": true, "run": 42, ...}
//!           {"ok": false, "error": "start-run: `x` is not a run number"}
//! ```
//!
//! This module owns the framing (a request is a command and its words; a
//! reply is a JSON object with `ok`), the server's socket and the client's.
//! It never decides what a command does: the server's handler does. A
//! server answers every request, a malformed one with `ok: false`, and never
//! waits for a client: a client that vanishes costs a reply sent nowhere.

use std::time::Duration;

pub use serde_json::{Map, Value, json};

/// The longest a server's reply may wait to be sent (a vanished client's
/// reply is dropped by libzmq at once; this bounds any other case).
const SEND_TIMEOUT_MS: i32 = 100;

/// The largest request taken (anything longer is refused unread).
pub const MAX_REQUEST: usize = 4096;

/// One command and its words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub command: String,
    pub args: Vec<String>,
}

impl Request {
    /// Parses a request: a JSON object `{"command": "...", "args": [...]}`
    /// (args optional; numbers are taken as their text), or a line of words.
    pub fn parse(bytes: &[u8]) -> Result<Request, String> {
        if bytes.len() > MAX_REQUEST {
            return Err(format!(
                "request of {} bytes: at most {MAX_REQUEST}",
                bytes.len()
            ));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "request is not UTF-8 text")?;
        let text = text.trim();
        if text.starts_with('{') {
            let v: Value =
                serde_json::from_str(text).map_err(|e| format!("request is not JSON: {e}"))?;
            let command = v
                .get("command")
                .and_then(Value::as_str)
                .ok_or("request has no \"command\" string")?
                .to_string();
            let args = match v.get("args") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| match x {
                        Value::String(s) => Ok(s.clone()),
                        Value::Number(n) => Ok(n.to_string()),
                        Value::Bool(b) => Ok(b.to_string()),
                        _ => Err("\"args\" must be strings or numbers".to_string()),
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err("\"args\" must be an array".into()),
            };
            return Ok(Request { command, args });
        }
        let mut words = text.split_whitespace().map(str::to_string);
        let command = words.next().ok_or("empty request")?;
        Ok(Request {
            command,
            args: words.collect(),
        })
    }

    /// The request as sent by a client.
    pub fn to_json(&self) -> String {
        json!({"command": self.command, "args": self.args}).to_string()
    }
}

/// A successful reply with these fields.
pub fn ok(mut fields: Map<String, Value>) -> Value {
    fields.insert("ok".into(), Value::Bool(true));
    Value::Object(fields)
}

/// A refused request: nothing was changed.
pub fn error(msg: impl Into<String>) -> Value {
    json!({"ok": false, "error": msg.into()})
}

/// A control endpoint from the command line: a port (on 127.0.0.1) or a
/// ZeroMQ endpoint such as `tcp://127.0.0.1:5600` or `ipc:///run/ssdaq`.
pub fn endpoint_from(s: &str) -> Result<String, String> {
    match s.parse::<u16>() {
        Ok(port) => Ok(format!("tcp://127.0.0.1:{port}")),
        Err(_) if s.starts_with("tcp://") => {
            // libzmq takes a port above 65535 modulo 65536: refuse it here.
            let port = s.rsplit_once(':').map_or("", |(_, p)| p);
            if port == "*" || port.parse::<u16>().is_ok() {
                Ok(s.to_string())
            } else {
                Err(format!("`{s}`: `{port}` is not a port 0..65535 (or *)"))
            }
        }
        Err(_) if s.contains("://") => Ok(s.to_string()),
        Err(_) => Err(format!(
            "`{s}` is not a port or an endpoint, e.g. 5600 or tcp://127.0.0.1:5600"
        )),
    }
}

/// A bound REP socket.
pub struct Server {
    sock: zmq::Socket,
    _ctx: zmq::Context,
    endpoint: String,
}

/// Whether a `tcp://` endpoint binds only loopback addresses.
pub fn is_loopback(endpoint: &str) -> bool {
    let Some(rest) = endpoint.strip_prefix("tcp://") else {
        return true; // ipc://, inproc://: this host only
    };
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Server {
    /// Binds `endpoint` (`tcp://127.0.0.1:5600`, `ipc:///run/ssdaq.ctl` …).
    pub fn bind(endpoint: &str) -> Result<Server, String> {
        let ctx = zmq::Context::new();
        let sock = ctx
            .socket(zmq::REP)
            .map_err(|e| format!("control socket: {e}"))?;
        let setup = || -> Result<(), zmq::Error> {
            sock.set_linger(0)?;
            sock.set_sndtimeo(SEND_TIMEOUT_MS)?;
            // Larger than any request taken, so an oversized one is read
            // and refused with a reply rather than dropping its client.
            sock.set_maxmsgsize(1 << 20)?;
            sock.bind(endpoint)
        };
        setup().map_err(|e| match e {
            zmq::Error::EADDRINUSE => format!(
                "cannot bind the control endpoint {endpoint}: address in use (another ssdaqd or simulator?)"
            ),
            zmq::Error::EINVAL | zmq::Error::EPROTONOSUPPORT | zmq::Error::ENODEV => format!(
                "{endpoint:?} is not an endpoint to bind: give tcp://127.0.0.1:PORT or ipc://PATH"
            ),
            e => format!("cannot bind the control endpoint {endpoint}: {e}"),
        })?;
        let endpoint = sock
            .get_last_endpoint()
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| endpoint.to_string());
        Ok(Server {
            sock,
            _ctx: ctx,
            endpoint,
        })
    }

    /// The endpoint bound (a `:0` port resolved).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Waits up to `timeout` for one request and answers it with what
    /// `handle` returns (a malformed request gets an error reply without
    /// `handle` seeing it). False if nothing came.
    pub fn serve_one(
        &self,
        timeout: Duration,
        handle: impl FnOnce(Request) -> Value,
    ) -> Result<bool, String> {
        match self.sock.poll(zmq::POLLIN, timeout.as_millis() as i64) {
            Ok(0) | Err(zmq::Error::EINTR) => return Ok(false),
            Ok(_) => {}
            Err(e) => return Err(format!("control socket: {e}")),
        }
        let msg = match self.sock.recv_multipart(zmq::DONTWAIT) {
            Ok(m) => m,
            Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => return Ok(false),
            Err(e) => return Err(format!("control socket: {e}")),
        };
        let reply = match msg.as_slice() {
            [one] => match Request::parse(one) {
                Ok(r) => handle(r),
                Err(e) => error(e),
            },
            _ => error(format!("a request is one message part, not {}", msg.len())),
        };
        // A reply nobody waits for any more is dropped: never an error here.
        let _ = self.sock.send(reply.to_string().as_bytes(), 0);
        Ok(true)
    }
}

/// Sends one request to `endpoint` and waits up to `timeout` for the reply.
pub fn request(endpoint: &str, req: &Request, timeout: Duration) -> Result<Value, String> {
    let ctx = zmq::Context::new();
    let sock = ctx.socket(zmq::REQ).map_err(|e| e.to_string())?;
    sock.set_linger(0).map_err(|e| e.to_string())?;
    sock.connect(endpoint)
        .map_err(|e| format!("{endpoint:?}: cannot connect ({e}); give tcp://HOST:PORT"))?;
    sock.send(req.to_json().as_bytes(), 0)
        .map_err(|e| e.to_string())?;
    match sock.poll(zmq::POLLIN, timeout.as_millis() as i64) {
        Ok(0) => {
            return Err(format!(
                "no reply from {endpoint} within {:.1} s (is it running with --control {endpoint}?)",
                timeout.as_secs_f64()
            ));
        }
        Ok(_) => {}
        Err(e) => return Err(e.to_string()),
    }
    let bytes = sock.recv_bytes(0).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{endpoint} replied with no JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_json_or_words() {
        let r = Request::parse(br#"{"command":"start-run","args":[42]}"#).unwrap();
        assert_eq!(r.command, "start-run");
        assert_eq!(r.args, ["42"]);
        let w = Request::parse(b"  send off 3 \n").unwrap();
        assert_eq!((w.command.as_str(), w.args.len()), ("send", 2));
        assert_eq!(Request::parse(w.to_json().as_bytes()).unwrap(), w);
        for bad in [
            &b""[..],
            b"   ",
            b"\xff\xfe",
            b"{",
            br#"{"args":[]}"#,
            br#"{"command":"x","args":{}}"#,
            br#"{"command":"x","args":[[1]]}"#,
        ] {
            assert!(Request::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Request::parse(&vec![b'a'; MAX_REQUEST + 1]).is_err());
    }

    #[test]
    fn endpoints_from_the_command_line() {
        assert_eq!(endpoint_from("5600").unwrap(), "tcp://127.0.0.1:5600");
        assert!(endpoint_from("tcp://127.0.0.1:*").is_ok());
        assert!(endpoint_from("ipc:///tmp/x").is_ok());
        for bad in [
            "tcp://127.0.0.1:99999",
            "tcp://127.0.0.1:",
            "tcp://x",
            "70000",
            "x",
        ] {
            assert!(endpoint_from(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_endpoints_are_told_apart() {
        for e in [
            "tcp://127.0.0.1:5600",
            "tcp://localhost:1",
            "tcp://[::1]:2",
            "ipc:///tmp/x",
        ] {
            assert!(is_loopback(e), "{e}");
        }
        for e in ["tcp://0.0.0.0:5600", "tcp://*:5600", "tcp://10.0.0.1:1"] {
            assert!(!is_loopback(e), "{e}");
        }
    }

    #[test]
    fn a_server_answers_good_and_bad_requests() {
        let s = Server::bind("tcp://127.0.0.1:0").unwrap();
        let ep = s.endpoint().to_string();
        let t = std::thread::spawn(move || {
            let mut n = 0;
            while n < 2 {
                if s.serve_one(Duration::from_millis(100), |r| {
                    ok(Map::from_iter([("echo".to_string(), json!(r.args))]))
                })
                .unwrap()
                {
                    n += 1;
                }
            }
        });
        let r = request(
            &ep,
            &Request {
                command: "x".into(),
                args: vec!["1".into()],
            },
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(r["ok"], true);
        assert_eq!(r["echo"][0], "1");
        // Garbage from a raw REQ: an error reply, the server carries on.
        let ctx = zmq::Context::new();
        let req = ctx.socket(zmq::REQ).unwrap();
        req.connect(&ep).unwrap();
        req.send(&b"\xff"[..], 0).unwrap();
        let v: Value = serde_json::from_slice(&req.recv_bytes(0).unwrap()).unwrap();
        assert_eq!(v["ok"], false);
        t.join().unwrap();
    }
}

//! A webhook receiver for tests and benches: an HTTP/1.1 listener on 127.0.0.1 that hands every JSON
//! body posted to it to a callback and answers 200. Shared by several crates through `#[path]`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

/// Starts the receiver; returns its URL. `on_body` runs on the receiver's thread as each body arrives.
pub(crate) fn serve(on_body: impl Fn(serde_json::Value) + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(json) = serde_json::from_slice(&body)
            {
                on_body(json);
            }
            let _ = reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    url
}

//! With an OTLP endpoint set, the spans a service makes reach the collector over OTLP/HTTP
//! as protobuf, and dropping the telemetry guard exports the queued batch before `main`
//! returns. The collector here is a loopback socket that records what is posted to it.
//!
//! One test per file: it installs the process-wide subscriber.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, Sender};

use anyhow::{Context, Result, bail, ensure};
use driftline_process::telemetry::{self, TelemetryArgs};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tracing::Instrument;

/// One request as the collector saw it.
struct Posted {
    request_line: String,
    content_type: String,
    body: Vec<u8>,
}

/// Serves HTTP/1.1 on a loopback port, answering 200 to everything and sending each
/// request on `tx` before it answers, so an export has been recorded by the time the
/// exporter sees it succeed.
fn collector(tx: Sender<Posted>) -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let tx = tx.clone();
            std::thread::spawn(move || serve(stream, &tx));
        }
    });
    Ok(url)
}

fn serve(stream: TcpStream, tx: &Sender<Posted>) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    // Keep-alive: the exporter reuses its connection.
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let (mut length, mut content_type) = (0, String::new());
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').context("malformed header")?;
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse()?,
                "content-type" => content_type = value.trim().to_string(),
                "transfer-encoding" => bail!("chunked bodies are not expected from the exporter"),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        tx.send(Posted {
            request_line: request_line.trim_end().to_string(),
            content_type,
            body,
        })?;
        writer.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        )?;
    }
}

fn string_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match &kv.value {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(s)),
            }) => Some(s.as_str()),
            _ => None,
        })
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match &kv.value {
            Some(AnyValue {
                value: Some(any_value::Value::IntValue(i)),
            }) => Some(*i),
            _ => None,
        })
}

// Inside a runtime, as in the binaries' `main`: the exporter's blocking HTTP client must
// neither be built nor dropped on a runtime thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_message_spans_over_otlp_http_when_the_guard_drops() -> Result<()> {
    let (tx, rx) = mpsc::channel();
    let endpoint = collector(tx)?;
    let guard = telemetry::init(&TelemetryArgs {
        // The trailing slash is how people paste collector URLs; it must not double up.
        otlp_endpoint: Some(format!("{endpoint}/")),
        service_name: "driftline-otlp-test".into(),
    })?;

    // Shaped like the runtime's span per consumed message, with work nested inside it.
    let message = tracing::info_span!(
        "message",
        topic = "driftline.requests",
        partition = 3,
        offset = 42
    );
    async {
        tracing::info_span!("predict", model = "flights-delay").in_scope(|| {
            tracing::info!(version = 7, "scored");
        });
        tokio::task::yield_now().await;
    }
    .instrument(message)
    .await;

    // The batch exporter waits seconds before sending on its own; only the guard's flush
    // can have posted anything by the time the drop returns.
    drop(guard);
    let posted: Vec<Posted> = rx.try_iter().collect();
    ensure!(!posted.is_empty(), "nothing was posted to the collector");

    let mut spans: Vec<Span> = Vec::new();
    for p in &posted {
        ensure!(
            p.request_line == "POST /v1/traces HTTP/1.1",
            "unexpected request {:?}",
            p.request_line
        );
        ensure!(
            p.content_type == "application/x-protobuf",
            "unexpected content type {:?}",
            p.content_type
        );
        ensure!(!p.body.is_empty(), "empty export body");
        let request = ExportTraceServiceRequest::decode(p.body.as_slice())
            .context("the body is not an OTLP trace export")?;
        for rs in request.resource_spans {
            let resource = rs.resource.context("spans without a resource")?;
            ensure!(
                string_attr(&resource.attributes, "service.name") == Some("driftline-otlp-test"),
                "service.name is not the one asked for: {:?}",
                resource.attributes
            );
            spans.extend(rs.scope_spans.into_iter().flat_map(|s| s.spans));
        }
    }

    let find = |name: &str| {
        spans.iter().find(|s| s.name == name).with_context(|| {
            format!(
                "no span {name:?} among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    let message = find("message")?;
    let predict = find("predict")?;
    ensure!(
        string_attr(&message.attributes, "topic") == Some("driftline.requests")
            && int_attr(&message.attributes, "partition") == Some(3)
            && int_attr(&message.attributes, "offset") == Some(42),
        "the message span lost its fields: {:?}",
        message.attributes
    );
    ensure!(
        predict.trace_id == message.trace_id && predict.parent_span_id == message.span_id,
        "the nested span is not the message span's child"
    );
    ensure!(
        predict.events.iter().any(|e| e.name == "scored"),
        "the event inside the span was not exported: {:?}",
        predict.events
    );
    Ok(())
}

//! The status page at `/`: what the relay offers and how it is doing, for
//! its operator and for anyone deciding whether to use it.
//!
//! One self-contained HTML document (no external assets, so it works on a
//! closed network and leaks no visit to a third party). The figures are
//! rendered on the server from the same [`RelayInfo`] the signed info
//! document carries, so the two always agree; a small inline script fetches
//! the page again every few seconds, swaps the figures in, and works out
//! request and byte rates from the counters between two fetches. Nothing on
//! it names a user, a key of a user, or a blob.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use cairn_proto::RelayInfo;

use super::AppState;
use super::chart::traffic_svg;
use super::error::ApiError;
use super::info::current_info;

/// Seconds between the page's refreshes of itself.
const REFRESH_SECS: u32 = 5;

pub(crate) async fn status_page(State(app): State<AppState>) -> Result<Response, ApiError> {
    let (info, _) = current_info(&app)?;
    let forwards = app.store.forward_count().await.unwrap_or(0);
    let body = render(&app, &info, forwards);
    Ok(([(header::CACHE_CONTROL, "no-store")], Html(body)).into_response())
}

/// `bytes` for people: 1,023 B, 1.5 MiB, 2.00 GiB.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

/// A duration in the largest whole unit that reads well: 90 days, 12 hours.
fn span(secs: u64) -> String {
    match secs {
        s if s >= 2 * 86_400 && s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s >= 2 * 3_600 && s % 3_600 == 0 => format!("{} hours", s / 3_600),
        s if s >= 2 * 60 && s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// How long before `now` the moment `at` was, roughly: 40 s, 3 min, 2 h.
fn ago(now: u64, at: u64) -> String {
    match now.saturating_sub(at) {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3_600 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3_600),
        s => format!("{} days", s / 86_400),
    }
}

/// Escapes text for HTML: peer URLs and errors come from elsewhere.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn render(app: &AppState, info: &RelayInfo, forwards: u64) -> String {
    let m = &app.metrics;
    let fed = &app.federation.metrics;
    let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
    let g = app.gauges();
    let used_permille = (info.capacity_used.saturating_mul(1000))
        .checked_div(info.capacity_total)
        .unwrap_or(0);
    let limits = &info.limits;
    let pow = if limits.pow_bits == 0 {
        "none".to_owned()
    } else {
        format!("{} bits per upload", limits.pow_bits)
    };

    let mut peers = String::new();
    for peer in app.federation.peers.snapshot() {
        let (health, class) = match (&peer.info, &peer.last_error) {
            (Some(_), None) => ("reachable".to_owned(), "ok"),
            // The error says what went wrong ("unreachable: …", "info
            // document answered 503", …); a prefix would repeat or misname it.
            (_, Some(error)) => (escape(error), "bad"),
            (None, None) => ("not yet asked".to_owned(), "wait"),
        };
        let free = peer
            .info
            .as_ref()
            .map_or_else(|| "—".to_owned(), |i| size(i.capacity_free));
        let _ = write!(
            peers,
            "<tr><td><span class='dot {class}'></span>{url}</td><td>{health}</td>\
             <td>{free}</td><td>{standing:.2}</td><td>{how}</td></tr>",
            url = escape(&peer.relay.url.to_string()),
            standing = app.federation.standing(&peer.relay.key),
            how = if peer.learned {
                "learned"
            } else {
                "configured"
            },
        );
    }
    if peers.is_empty() {
        peers.push_str(
            "<tr><td colspan=5>No peers: this relay keeps every blob to itself.</td></tr>",
        );
    }

    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
<meta name=viewport content='width=device-width,initial-scale=1'>\
<title>cairn relay</title><style>{STYLE}</style></head><body><main id=status \
data-refresh={REFRESH_SECS} data-at='{at}' data-requests='{requests}' data-in='{bytes_in}' data-out='{bytes_out}'>\
<h1>cairn relay</h1>\
<p class=lede>This relay stores end-to-end encrypted blobs for cairn clients. It cannot read \
them, and it keeps no accounts.</p>\
<section><h2>Capacity</h2>\
<meter id=gauge min=0 max=1000 low=800 high=900 optimum=0 value={used_permille}></meter>\
<p><span id=used data-bytes={used}>{used_h}</span> used of \
<span id=total data-bytes={total}>{total_h}</span> \
(<span id=percent>{percent:.1}%</span>), <span id=free data-bytes={free}>{free_h}</span> free.</p>\
<dl><dt>Blobs</dt><dd id=blobs>{blobs}</dd><dt>Mailbox heads</dt><dd id=heads>{heads}</dd>\
<dt>Uploads in progress</dt><dd id=uploads>{uploads}</dd>\
<dt>Handed to peers</dt><dd id=forwards>{forwards}</dd></dl></section>\
<section><h2>Traffic</h2><dl>\
<dt>Requests</dt><dd><span id=request-rate>—</span> /s \
<small>({requests} since start)</small></dd>\
<dt>Received</dt><dd><span id=in-rate>—</span> /s <small>({bytes_in_h} since start)</small></dd>\
<dt>Sent</dt><dd><span id=out-rate>—</span> /s <small>({bytes_out_h} since start)</small></dd>\
</dl><figure>{chart}<figcaption>The last hour, a bar a minute: requests, and bytes \
<span class=key-in>received</span> and <span class=key-out>sent</span>.</figcaption></figure>\
</section>\
<section><h2>Policy</h2><dl>\
<dt>Retention</dt><dd id=retention data-secs={retention_secs}>kept {retention} after the last \
access, then deleted</dd>\
<dt>Largest blob</dt><dd>{max_blob}</dd>\
<dt>Per upload key</dt><dd>{quota}, {key_rate} requests a minute</dd>\
<dt>Per address range</dt><dd>{addr_rate} requests a minute</dd>\
<dt>Proof of work</dt><dd>{pow}</dd></dl></section>\
<section><h2>Peers</h2><div class=scroll><table>\
<tr><th>Relay</th><th>Health</th><th>Free</th><th>Standing</th><th></th></tr>{peers}</table></div>\
</section>\
<section><h2>Housekeeping since start</h2><dl>\
<dt>Last expiry pass</dt><dd id=gc-last>{gc_last}</dd>\
<dt>Expiry passes</dt><dd id=gc-runs>{gc_runs}, every {gc_every}</dd>\
<dt>Expired</dt><dd id=gc-deleted>{gc_blobs} blobs, {gc_bytes}</dd>\
<dt>Last transfer</dt><dd id=transfer-last>{t_last}</dd>\
<dt>Transferred to peers</dt><dd id=transfers-out>{t_out} blobs, {t_out_bytes}</dd>\
<dt>Taken from peers</dt><dd id=transfers-in>{t_in} blobs, {t_in_bytes}</dd>\
<dt>Replicas pushed</dt><dd id=replicas>{replicas}</dd></dl></section>\
<footer><p>Identity <code id=key>{key}</code><br>{software}, up {uptime}. \
<a href='/.well-known/cairn-relay'>Signed info document</a> · <a href='/metrics'>Metrics</a> · \
<span id=refreshed>refreshes every {REFRESH_SECS} s</span></p></footer>\
</main><script>{SCRIPT}</script></body></html>",
        at = app.started.elapsed().as_millis(),
        chart = traffic_svg(&m.history.rates(app.started.elapsed(), m.traffic()), size),
        requests = m.requests_total(),
        bytes_in = load(&m.bytes_received),
        bytes_out = load(&m.bytes_sent),
        bytes_in_h = size(load(&m.bytes_received)),
        bytes_out_h = size(load(&m.bytes_sent)),
        used = info.capacity_used,
        used_h = size(info.capacity_used),
        total = info.capacity_total,
        total_h = size(info.capacity_total),
        free = info.capacity_free,
        free_h = size(info.capacity_free),
        percent = used_permille as f64 / 10.0,
        blobs = g.blobs,
        heads = g.heads,
        uploads = g.uploads_in_flight,
        retention_secs = info.retention_secs,
        retention = span(info.retention_secs),
        max_blob = size(info.max_blob_size),
        quota = size(limits.key_quota_bytes),
        key_rate = limits.key_requests_per_min,
        addr_rate = limits.addr_requests_per_min,
        gc_last = match load(&m.gc_last_at) {
            0 => "none yet since start".to_owned(),
            at => format!(
                "{} ago, {} blobs deleted",
                ago(app.now(), at),
                load(&m.gc_last_deleted_blobs)
            ),
        },
        gc_every = span(app.config.gc_interval.as_secs()),
        t_last = match load(&fed.transfer_last_at) {
            0 => "none since start".to_owned(),
            at => format!("{} ago", ago(app.now(), at)),
        },
        gc_runs = load(&m.gc_runs),
        gc_blobs = load(&m.gc_deleted_blobs),
        gc_bytes = size(load(&m.gc_deleted_bytes)),
        t_out = load(&fed.transfers_out),
        t_out_bytes = size(load(&fed.transfer_bytes_out)),
        t_in = load(&fed.transfers_in),
        t_in_bytes = size(load(&fed.transfer_bytes_in)),
        replicas = load(&fed.replicas_pushed),
        key = info.relay,
        software = escape(crate::SOFTWARE),
        uptime = span(info.uptime_secs),
    )
}

const STYLE: &str = "\
:root{color-scheme:light dark;--ok:#2a9d4a;--bad:#c0392b;--wait:#999}\
body{font:16px/1.45 system-ui,sans-serif;max-width:46em;margin:0 auto;padding:1em}\
h1{margin:.2em 0}h2{font-size:1.1em;margin:1.4em 0 .4em;border-bottom:1px solid #8884}\
.lede{opacity:.85}meter{width:100%;height:1.4em}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1.2em;margin:0}dd{margin:0}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25em .8em .25em 0;\
vertical-align:top}.scroll{overflow-x:auto}code{word-break:break-all}small{opacity:.7}\
.dot{display:inline-block;width:.7em;height:.7em;border-radius:50%;margin-right:.4em}\
.ok{background:var(--ok)}.bad{background:var(--bad)}.wait{background:var(--wait)}\
footer{margin-top:2em;font-size:.9em;opacity:.85}\
figure{margin:.8em 0 0}svg{width:100%;height:auto;font-size:12px;fill:currentColor}\
.axis{stroke:#8886}rect.req{fill:#3b7dd8}rect.in,.key-in{fill:#2a9d4a;color:#2a9d4a}\
rect.out,.key-out{fill:#d98c1f;color:#d98c1f}figcaption{font-size:.85em;opacity:.8}\
@media (max-width:30em){body{font-size:15px}dl{grid-template-columns:1fr}dt{font-weight:600}}";

/// Fetches the page again, swaps in the new figures, and shows the rates
/// between the two fetches.
const SCRIPT: &str = "\
(function(){\
const per=(a,b,k,dt)=>Math.max(0,(Number(b.dataset[k])-Number(a.dataset[k]))/dt);\
const size=b=>{const u=['B','KiB','MiB','GiB','TiB'];let i=0;\
while(b>=1024&&i<u.length-1){b/=1024;i++}return (i?b.toFixed(2):Math.round(b))+' '+u[i]};\
async function tick(){try{\
const r=await fetch('/',{cache:'no-store'});if(!r.ok)throw new Error(r.status);\
const doc=new DOMParser().parseFromString(await r.text(),'text/html');\
const next=doc.getElementById('status'),prev=document.getElementById('status');\
const dt=(Number(next.dataset.at)-Number(prev.dataset.at))/1000;\
if(dt>0){\
next.querySelector('#request-rate').textContent=per(prev,next,'requests',dt).toFixed(1);\
next.querySelector('#in-rate').textContent=size(per(prev,next,'in',dt));\
next.querySelector('#out-rate').textContent=size(per(prev,next,'out',dt));}\
next.querySelector('#refreshed').textContent='updated '+new Date().toLocaleTimeString();\
prev.replaceWith(document.adoptNode(next));\
}catch(e){const s=document.getElementById('refreshed');\
if(s)s.textContent='cannot reach the relay ('+e.message+'); retrying';}\
setTimeout(tick,ms);}\
const ms=1000*Number(document.getElementById('status').dataset.refresh||5);\
setTimeout(tick,ms);})();";

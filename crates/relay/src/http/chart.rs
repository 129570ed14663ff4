//! The status page's chart of the last hour's traffic: inline SVG drawn on
//! the server, so the page stays one self-contained document.

use std::fmt::Write as _;

use crate::rates::{Rate, SPAN};

/// Drawing width, in SVG units (the chart scales to the page).
const WIDTH: f64 = 600.0;
/// Height of one panel's bars.
const PANEL: f64 = 70.0;
/// Room above each panel for its label.
const LABEL: f64 = 18.0;

/// A CSS class and the figure of a rate it draws.
type Series = (&'static str, fn(&Rate) -> f64);

/// One panel: a label and, per interval, one or two bars.
struct Panel<'a> {
    label: String,
    series: &'a [Series],
}

/// Two panels, requests per second and bytes per second (received and
/// sent), each scaled to its own peak, time running left to right over
/// the last hour. `size` formats bytes for people.
pub(super) fn traffic_svg(rates: &[Rate], size: fn(u64) -> String) -> String {
    let peak = |f: fn(&Rate) -> f64| rates.iter().map(f).fold(0.0, f64::max);
    let (requests, bytes_in, bytes_out) = (
        peak(|r| r.requests),
        peak(|r| r.bytes_in),
        peak(|r| r.bytes_out),
    );
    let bytes = bytes_in.max(bytes_out);
    let panels = [
        Panel {
            label: format!("Requests per second (peak {requests:.1})"),
            series: &[("req", |r| r.requests)],
        },
        Panel {
            label: format!(
                "Received and sent per second (peak {}/s)",
                size(whole(bytes))
            ),
            series: &[("in", |r| r.bytes_in), ("out", |r| r.bytes_out)],
        },
    ];
    let height = 2.0 * (LABEL + PANEL) + 16.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg id=traffic-chart role=img viewBox='0 0 {WIDTH} {height}' \
         data-intervals={n} data-peak-requests='{requests:.3}' data-peak-bytes='{bytes:.0}' \
         aria-label='Requests and bytes per second over the last hour'>",
        n = rates.len(),
    );
    for (i, panel) in panels.iter().enumerate() {
        let top = i as f64 * (LABEL + PANEL);
        let base = top + LABEL + PANEL;
        let _ = write!(
            svg,
            "<text x=0 y='{y}'>{label}</text><line class=axis x1=0 x2='{WIDTH}' y1='{base}' \
             y2='{base}'/>",
            y = top + 13.0,
            label = panel.label,
        );
        let scale = panel
            .series
            .iter()
            .map(|(_, f)| peak(*f))
            .fold(0.0, f64::max);
        for rate in rates {
            let x0 = x_of(rate.from_ago.as_secs_f64());
            let x1 = x_of(rate.to_ago.as_secs_f64());
            // Side by side when a panel has two series.
            let slot = (x1 - x0) / panel.series.len() as f64;
            for (k, (class, value)) in panel.series.iter().enumerate() {
                let h = if scale > 0.0 {
                    value(rate) / scale * PANEL
                } else {
                    0.0
                };
                let _ = write!(
                    svg,
                    "<rect class={class} x='{x:.1}' y='{y:.1}' width='{w:.1}' height='{h:.1}'/>",
                    x = x0 + k as f64 * slot,
                    y = base - h,
                    w = slot.max(0.5),
                );
            }
        }
    }
    let _ = write!(
        svg,
        "<text x=0 y='{y}'>60 min ago</text><text x='{mid}' y='{y}' text-anchor=middle>30 min\
         </text><text x='{WIDTH}' y='{y}' text-anchor=end>now</text></svg>",
        y = height - 2.0,
        mid = WIDTH / 2.0,
    );
    svg
}

/// A non-negative rate, rounded to a whole number of bytes (`as` saturates
/// floats, which a rate never needs).
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "rates are finite and non-negative; `as` saturates"
)]
fn whole(rate: f64) -> u64 {
    rate.round() as u64
}

/// Where a moment `ago` seconds back falls across the chart.
fn x_of(ago: f64) -> f64 {
    WIDTH * (1.0 - ago / SPAN.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_interval_gets_a_bar_per_series_scaled_to_the_panel_peak() {
        let rate = |from: u64, to: u64, requests: f64| Rate {
            from_ago: Duration::from_secs(from),
            to_ago: Duration::from_secs(to),
            requests,
            bytes_in: requests * 1024.0,
            bytes_out: 0.0,
        };
        let svg = traffic_svg(&[rate(120, 60, 5.0), rate(60, 0, 10.0)], |b| {
            format!("{b} B")
        });
        assert!(svg.starts_with("<svg id=traffic-chart"));
        assert_eq!(svg.matches("<rect class=req").count(), 2);
        assert_eq!(svg.matches("<rect class=in").count(), 2);
        assert_eq!(svg.matches("<rect class=out").count(), 2);
        // The busier minute reaches the top of its panel, the other half.
        assert!(svg.contains(&format!("height='{PANEL:.1}'")));
        assert!(svg.contains(&format!("height='{:.1}'", PANEL / 2.0)));
        assert!(svg.contains("peak 10.0"));
        assert!(svg.contains("(peak 10240 B/s)"));
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn an_idle_hour_draws_flat() {
        let svg = traffic_svg(&[], |b| format!("{b} B"));
        assert!(svg.contains("data-intervals=0"));
        assert!(!svg.contains("<rect"));
    }
}

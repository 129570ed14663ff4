//! Charts as plain SVG, drawn by hand: a few lines and labels need no
//! plotting library, and the same run gives the same file byte for byte.

use std::fmt::Write;

/// One value of a panel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// The value.
    pub value: f64,
    /// Whether it is only an upper bound (nothing was seen, and the value
    /// is what the run rules out); drawn hollow.
    pub bound: bool,
}

/// One panel: a line over the chart's x values.
#[derive(Clone, Debug)]
pub struct Panel {
    /// What is plotted, with its unit.
    pub title: String,
    /// Whether the y axis is logarithmic.
    pub log: bool,
    /// One point per x value.
    pub points: Vec<Point>,
}

const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 260.0;
const MARGIN_L: f64 = 70.0;
const MARGIN_T: f64 = 50.0;
const MARGIN_B: f64 = 60.0;
const GAP: f64 = 40.0;

/// Panels side by side over the same x values (`xs`, evenly spaced, as
/// labels), under `title`.
#[must_use]
pub fn draw(title: &str, x_label: &str, xs: &[String], panels: &[Panel]) -> String {
    let width = panels.len() as f64 * (MARGIN_L + PANEL_W + GAP) + GAP;
    let height = MARGIN_T + PANEL_H + MARGIN_B;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n",
        width / 2.0,
        escape(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        let left = GAP + i as f64 * (MARGIN_L + PANEL_W + GAP) + MARGIN_L;
        draw_panel(&mut svg, left, x_label, xs, panel);
    }
    svg.push_str("</svg>\n");
    svg
}

fn draw_panel(svg: &mut String, left: f64, x_label: &str, xs: &[String], panel: &Panel) {
    let (top, bottom) = (MARGIN_T, MARGIN_T + PANEL_H);
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <rect x=\"{left}\" y=\"{top}\" width=\"{PANEL_W}\" height=\"{PANEL_H}\" fill=\"none\" stroke=\"#888\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        left + PANEL_W / 2.0,
        top - 8.0,
        escape(&panel.title),
        left + PANEL_W / 2.0,
        bottom + 45.0,
        escape(x_label)
    );
    let x_at = |i: usize| {
        if xs.len() <= 1 {
            left + PANEL_W / 2.0
        } else {
            left + 20.0 + (PANEL_W - 40.0) * i as f64 / (xs.len() - 1) as f64
        }
    };
    // At most about ten labels along x.
    let step = xs.len().div_ceil(10).max(1);
    for (i, label) in xs.iter().enumerate().step_by(step) {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x_at(i),
            bottom + 18.0,
            escape(label)
        );
    }
    let scale = Scale::fit(panel);
    for (value, label) in scale.ticks() {
        let y = scale.y(value, top, bottom);
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            left + PANEL_W,
            left - 6.0,
            y + 4.0
        );
    }
    let line: Vec<String> = panel
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{:.1},{:.1}", x_at(i), scale.y(p.value, top, bottom)))
        .collect();
    let _ = writeln!(
        svg,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f5fa8\" stroke-width=\"2\"/>",
        line.join(" ")
    );
    if panel.points.len() <= 40 {
        for (i, p) in panel.points.iter().enumerate() {
            let fill = if p.bound { "white" } else { "#1f5fa8" };
            let _ = writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{fill}\" stroke=\"#1f5fa8\" stroke-width=\"2\"/>",
                x_at(i),
                scale.y(p.value, top, bottom)
            );
        }
    }
}

/// The y range of a panel.
struct Scale {
    log: bool,
    low: f64,
    high: f64,
}

impl Scale {
    fn fit(panel: &Panel) -> Self {
        let values = panel.points.iter().map(|p| p.value);
        if panel.log {
            // Whole decades around the positive values.
            let positive: Vec<f64> = values.filter(|v| *v > 0.0).collect();
            let low = positive.iter().copied().fold(f64::INFINITY, f64::min);
            let high = positive.iter().copied().fold(0.0, f64::max);
            if positive.is_empty() {
                return Self {
                    log: true,
                    low: 1e-6,
                    high: 1.0,
                };
            }
            let low = 10f64.powf(low.log10().floor());
            let high = 10f64.powf(high.log10().ceil()).max(low * 10.0);
            Self {
                log: true,
                low,
                high,
            }
        } else {
            let high = values.fold(0.0, f64::max);
            Self {
                log: false,
                low: 0.0,
                high: if high > 0.0 { nice(high) } else { 1.0 },
            }
        }
    }

    fn y(&self, value: f64, top: f64, bottom: f64) -> f64 {
        let at = if self.log {
            let v = value.max(self.low);
            (v.log10() - self.low.log10()) / (self.high.log10() - self.low.log10())
        } else {
            (value - self.low) / (self.high - self.low)
        };
        bottom - (bottom - top) * at.clamp(0.0, 1.0)
    }

    fn ticks(&self) -> Vec<(f64, String)> {
        if self.log {
            let mut ticks = Vec::new();
            let mut v = self.low;
            while v <= self.high * 1.000_001 {
                ticks.push((v, format!("1e{}", v.log10().round())));
                v *= 10.0;
            }
            ticks
        } else {
            (0..=4)
                .map(|i| {
                    let v = self.high * f64::from(i) / 4.0;
                    (v, short(v))
                })
                .collect()
        }
    }
}

/// The next of 1, 2 or 5 times a power of ten at or above `v`.
fn nice(v: f64) -> f64 {
    let decade = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|&n| n >= v)
        .unwrap_or(10.0 * decade)
}

/// A number as a tick label: short, and exact for round values.
fn short(v: f64) -> String {
    if v == 0.0 {
        "0".to_owned()
    } else if v.abs() >= 1e4 || v.abs() < 1e-2 {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_an_svg_with_every_point_and_label() {
        let xs: Vec<String> = ["1", "2", "3"].map(String::from).to_vec();
        let panel = |log| Panel {
            title: "loss <per file>".to_owned(),
            log,
            points: vec![
                Point {
                    value: 1e-2,
                    bound: false,
                },
                Point {
                    value: 1e-4,
                    bound: false,
                },
                Point {
                    value: 3e-6,
                    bound: true,
                },
            ],
        };
        let svg = draw("copies", "copies", &xs, &[panel(true), panel(false)]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<circle").count(), 6);
        assert_eq!(
            svg.matches("fill=\"white\" stroke").count(),
            2,
            "bounds are hollow"
        );
        assert!(svg.contains("loss &lt;per file&gt;"));
        assert!(svg.contains(">1e-6<") && svg.contains(">1e-2<"), "{svg}");
    }

    #[test]
    fn round_numbers_make_the_linear_ticks() {
        assert_eq!(nice(7.3), 10.0);
        assert_eq!(nice(0.13), 0.2);
        assert_eq!(nice(420.0), 500.0);
        assert_eq!(short(2.5), "2.5");
        assert_eq!(short(0.0), "0");
        assert_eq!(short(50000.0), "5e4");
    }
}

//! Figures measured pair by pair (cairn, reference, cairn, reference…) and
//! the table they make.

/// One figure: every cairn and reference measurement of it.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) figure: String,
    pub(crate) unit: &'static str,
    /// What cairn is compared with.
    pub(crate) reference: String,
    /// True when more is better (rates); false for times and bytes.
    pub(crate) higher_is_better: bool,
    pub(crate) cairn: Vec<f64>,
    pub(crate) against: Vec<f64>,
}

/// The median of `values` (the mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn range(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// A figure with as many digits as it deserves.
fn show(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Row {
    /// cairn's median over the reference's, turned so that above 1 is
    /// better for cairn whatever the unit.
    pub(crate) fn ratio(&self) -> f64 {
        let (c, r) = (median(&self.cairn), median(&self.against));
        if self.higher_is_better { c / r } else { r / c }
    }
}

/// The table: figure, cairn median [min–max], reference median, ratio.
pub(crate) fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<46} {:>28} {:>12}  {:<28} {:>7}\n",
        "figure", "cairn median [min–max]", "reference", "reference is", "ratio"
    );
    out.push_str(&lines(rows));
    out.push_str("ratio: cairn relative to the reference, above 1 is better for cairn\n");
    out
}

/// The table's lines for `rows`, without the header.
pub(crate) fn lines(rows: &[Row]) -> String {
    let mut out = String::new();
    for row in rows {
        let (lo, hi) = range(&row.cairn);
        let cairn = format!(
            "{} [{}–{}] {}",
            show(median(&row.cairn)),
            show(lo),
            show(hi),
            row.unit
        );
        let ratio = row.ratio();
        let ratio = if ratio.is_finite() {
            format!("{ratio:.2}x")
        } else {
            "-".into()
        };
        out.push_str(&format!(
            "{:<46} {:>28} {:>12}  {:<28} {:>7}\n",
            row.figure,
            cairn,
            show(median(&row.against)),
            row.reference,
            ratio
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
        let rate = Row {
            figure: "x".into(),
            unit: "req/s",
            reference: "nginx".into(),
            higher_is_better: true,
            cairn: vec![50.0, 60.0, 40.0],
            against: vec![100.0, 100.0, 100.0],
        };
        assert_eq!(rate.ratio(), 0.5);
        let time = Row {
            higher_is_better: false,
            cairn: vec![2.0],
            against: vec![1.0],
            ..rate
        };
        assert_eq!(time.ratio(), 0.5);
        let text = table(&[time]);
        assert!(text.contains("2.00 [2.00–2.00] req/s"), "{text}");
    }
}

//! A small hand-written SVG writer for the debugger's plots (no plotting
//! crate): a canvas of escaped elements, linear/log axes with "nice" ticks,
//! and the four charts the debugger draws — histograms, box plots, line
//! curves and horizontal bars.
//!
//! Data elements carry a `class` so tests (and CSS) can find them:
//! `hist`, `bar`, `box`, `curve`, `threshold`, `clip`, `grid`.

use std::fmt::Write as _;

/// Colours of successive series.
pub const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Escapes text for XML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// A number short enough for a tick label or caption.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.2e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    }
}

/// Formats a pixel coordinate.
fn f(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "0".into()
    }
}

/// An SVG document being drawn.
#[derive(Debug)]
pub struct Svg {
    w: f64,
    h: f64,
    body: String,
}

impl Svg {
    /// An empty canvas of `w × h` pixels with a white background and a title.
    pub fn new(w: f64, h: f64, title: &str) -> Self {
        let mut s = Svg {
            w,
            h,
            body: String::new(),
        };
        let _ = writeln!(s.body, "<title>{}</title>", esc(title));
        s.rect(0.0, 0.0, w, h, "#ffffff", "background", 1.0);
        s.text(w / 2.0, 20.0, title, "middle", 14.0, "title");
        s
    }

    /// A filled rectangle (negative sizes are normalised).
    #[allow(clippy::too_many_arguments)]
    pub fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, class: &str, opacity: f64) {
        let (x, w) = if w < 0.0 { (x + w, -w) } else { (x, w) };
        let (y, h) = if h < 0.0 { (y + h, -h) } else { (y, h) };
        let _ = writeln!(
            self.body,
            "<rect class=\"{class}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\" fill-opacity=\"{opacity}\"/>",
            f(x),
            f(y),
            f(w),
            f(h)
        );
    }

    /// A straight line; `dash` is an SVG dash array (`""` for solid).
    #[allow(clippy::too_many_arguments)]
    pub fn line(
        &mut self,
        x1: f64,
        y1: f64,
        x2: f64,
        y2: f64,
        stroke: &str,
        width: f64,
        dash: &str,
        class: &str,
    ) {
        let dash = if dash.is_empty() {
            String::new()
        } else {
            format!(" stroke-dasharray=\"{dash}\"")
        };
        let _ = writeln!(
            self.body,
            "<line class=\"{class}\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{stroke}\" stroke-width=\"{width}\"{dash}/>",
            f(x1),
            f(y1),
            f(x2),
            f(y2)
        );
    }

    /// A path through `pts` (skips non-finite points by starting a new
    /// segment); `fill` is `none` for a curve.
    pub fn path(&mut self, pts: &[(f64, f64)], stroke: &str, fill: &str, class: &str) {
        let mut d = String::new();
        let mut pen_up = true;
        for &(x, y) in pts {
            if !(x.is_finite() && y.is_finite()) {
                pen_up = true;
                continue;
            }
            let _ = write!(d, "{}{} {} ", if pen_up { "M" } else { "L" }, f(x), f(y));
            pen_up = false;
        }
        if d.is_empty() {
            return;
        }
        let fill_op = if fill == "none" {
            ""
        } else {
            " fill-opacity=\"0.35\""
        };
        let _ = writeln!(
            self.body,
            "<path class=\"{class}\" d=\"{}\" stroke=\"{stroke}\" stroke-width=\"1.5\" fill=\"{fill}\"{fill_op}/>",
            d.trim_end()
        );
    }

    /// A small circle.
    pub fn dot(&mut self, x: f64, y: f64, r: f64, fill: &str, class: &str) {
        let _ = writeln!(
            self.body,
            "<circle class=\"{class}\" cx=\"{}\" cy=\"{}\" r=\"{r}\" fill=\"{fill}\"/>",
            f(x),
            f(y)
        );
    }

    /// Text; `anchor` is start, middle or end.
    pub fn text(&mut self, x: f64, y: f64, s: &str, anchor: &str, size: f64, class: &str) {
        let _ = writeln!(
            self.body,
            "<text class=\"{class}\" x=\"{}\" y=\"{}\" font-size=\"{size}\" text-anchor=\"{anchor}\">{}</text>",
            f(x),
            f(y),
            esc(s)
        );
    }

    /// Text rotated by `deg` degrees about its anchor point.
    pub fn text_rot(&mut self, x: f64, y: f64, s: &str, anchor: &str, size: f64, deg: f64) {
        let _ = writeln!(
            self.body,
            "<text class=\"label\" x=\"{0}\" y=\"{1}\" font-size=\"{size}\" text-anchor=\"{anchor}\" transform=\"rotate({deg} {0} {1})\">{2}</text>",
            f(x),
            f(y),
            esc(s)
        );
    }

    /// A legend: coloured squares and names, from (x, y) downwards.
    pub fn legend(&mut self, x: f64, y: f64, items: &[(&str, &str)]) {
        for (k, (name, color)) in items.iter().enumerate() {
            let yy = y + 16.0 * k as f64;
            self.rect(x, yy - 9.0, 10.0, 10.0, color, "legend", 0.8);
            self.text(x + 14.0, yy, name, "start", 11.0, "legend");
        }
    }

    /// The finished document.
    pub fn finish(self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\">\n{}</svg>\n",
            self.body,
            w = f(self.w),
            h = f(self.h)
        )
    }
}

/// About `n` round tick values covering `[lo, hi]`.
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi + step * 1e-9 && out.len() < 50 {
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
    }
    out
}

/// A plot area and the data ranges it maps.
#[derive(Debug, Clone, Copy)]
pub struct Axes {
    /// Left edge (px).
    pub x0: f64,
    /// Top edge (px).
    pub y0: f64,
    /// Width (px).
    pub w: f64,
    /// Height (px).
    pub h: f64,
    /// Data x range.
    pub xr: (f64, f64),
    /// Data y range.
    pub yr: (f64, f64),
}

impl Axes {
    /// Makes the ranges non-empty and finite.
    pub fn new(x0: f64, y0: f64, w: f64, h: f64, xr: (f64, f64), yr: (f64, f64)) -> Self {
        let fix = |(a, b): (f64, f64)| {
            let (a, b) = if a.is_finite() && b.is_finite() {
                (a, b)
            } else {
                (0.0, 1.0)
            };
            if b > a {
                (a, b)
            } else {
                let d = if a == 0.0 { 1.0 } else { a.abs() * 0.05 };
                (a - d, a + d)
            }
        };
        Axes {
            x0,
            y0,
            w,
            h,
            xr: fix(xr),
            yr: fix(yr),
        }
    }

    /// Pixel x of data x.
    pub fn px(&self, x: f64) -> f64 {
        self.x0 + (x - self.xr.0) / (self.xr.1 - self.xr.0) * self.w
    }

    /// Pixel y of data y.
    pub fn py(&self, y: f64) -> f64 {
        self.y0 + self.h - (y - self.yr.0) / (self.yr.1 - self.yr.0) * self.h
    }

    /// Clamps data x into the range.
    pub fn cx(&self, x: f64) -> f64 {
        x.clamp(self.xr.0, self.xr.1)
    }

    /// Frame, ticks and labels; `xticks = false` leaves the x ticks to the caller.
    pub fn draw(&self, svg: &mut Svg, xlabel: &str, ylabel: &str, xticks: bool) {
        let (x1, y1) = (self.x0 + self.w, self.y0 + self.h);
        for t in ticks(self.yr.0, self.yr.1, 6) {
            let y = self.py(t);
            svg.line(self.x0, y, x1, y, "#e8e8e8", 1.0, "", "gridline");
            svg.text(self.x0 - 5.0, y + 4.0, &num(t), "end", 10.0, "tick");
        }
        if xticks {
            for t in ticks(self.xr.0, self.xr.1, 8) {
                let x = self.px(t);
                svg.line(x, y1, x, y1 + 4.0, "#333", 1.0, "", "tick");
                svg.text(x, y1 + 16.0, &num(t), "middle", 10.0, "tick");
            }
        }
        svg.line(self.x0, y1, x1, y1, "#333", 1.0, "", "axis");
        svg.line(self.x0, self.y0, self.x0, y1, "#333", 1.0, "", "axis");
        svg.text(
            self.x0 + self.w / 2.0,
            y1 + 34.0,
            xlabel,
            "middle",
            11.0,
            "label",
        );
        svg.text_rot(
            self.x0 - 48.0,
            self.y0 + self.h / 2.0,
            ylabel,
            "middle",
            11.0,
            -90.0,
        );
    }
}

/// One histogram series: counts over equal bins of the chart's range.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Counts per bin.
    pub counts: Vec<u64>,
}

/// A vertical marker (threshold) or shaded band on a histogram.
#[derive(Debug, Clone)]
pub struct Band {
    /// Data range (equal ends: a line).
    pub from: f64,
    /// Data range end.
    pub to: f64,
    /// Legend / label text.
    pub label: String,
}

/// Overlaid histograms over `[lo, hi]` with a log count axis, clipping
/// bands shaded, threshold lines and (optionally) quantization grid lines.
#[allow(clippy::too_many_arguments)]
pub fn histogram(
    title: &str,
    lo: f64,
    hi: f64,
    series: &[Series],
    thresholds: &[Band],
    clips: &[Band],
    grid: &[f64],
    notes: &[String],
) -> String {
    let (w, h) = (760.0, 440.0 + 14.0 * notes.len() as f64);
    let mut svg = Svg::new(w, h, title);
    let ymax = series
        .iter()
        .flat_map(|s| s.counts.iter())
        .map(|&c| ((c as f64) + 1.0).log10())
        .fold(0.0, f64::max)
        .max(1.0);
    let ax = Axes::new(70.0, 40.0, 640.0, 320.0, (lo, hi), (0.0, ymax * 1.05));
    for c in clips {
        let (a, b) = (ax.px(ax.cx(c.from)), ax.px(ax.cx(c.to)));
        svg.rect(a, ax.y0, b - a, ax.h, "#d62728", "clip", 0.12);
    }
    for &g in grid {
        if g >= ax.xr.0 && g <= ax.xr.1 {
            let x = ax.px(g);
            svg.line(x, ax.y0, x, ax.y0 + ax.h, "#9e9e9e", 0.5, "", "grid");
        }
    }
    ax.draw(&mut svg, "value", "log10(1 + count)", true);
    for (k, s) in series.iter().enumerate() {
        let n = s.counts.len().max(1);
        let bw = (hi - lo) / n as f64;
        let mut pts = vec![(ax.px(lo), ax.py(0.0))];
        for (i, &c) in s.counts.iter().enumerate() {
            let y = ax.py(((c as f64) + 1.0).log10());
            pts.push((ax.px(lo + bw * i as f64), y));
            pts.push((ax.px(lo + bw * (i + 1) as f64), y));
        }
        pts.push((ax.px(hi), ax.py(0.0)));
        let color = PALETTE[k % PALETTE.len()];
        svg.path(&pts, color, color, "hist");
    }
    for t in thresholds {
        if t.from >= ax.xr.0 && t.from <= ax.xr.1 {
            let x = ax.px(t.from);
            svg.line(
                x,
                ax.y0,
                x,
                ax.y0 + ax.h,
                "#000000",
                1.5,
                "6 3",
                "threshold",
            );
            svg.text(
                x + 3.0,
                ax.y0 + 12.0,
                &t.label,
                "start",
                10.0,
                "threshold-label",
            );
        }
    }
    let mut items: Vec<(&str, &str)> = series
        .iter()
        .enumerate()
        .map(|(k, s)| (s.name.as_str(), PALETTE[k % PALETTE.len()]))
        .collect();
    if !clips.is_empty() {
        items.push(("clipped region", "#f4c7c7"));
    }
    svg.legend(ax.x0 + ax.w - 150.0, ax.y0 + 14.0, &items);
    for (k, n) in notes.iter().enumerate() {
        svg.text(ax.x0, 420.0 + 14.0 * k as f64, n, "start", 11.0, "note");
    }
    svg.finish()
}

/// Five-number summary of one box.
#[derive(Debug, Clone, Copy, Default)]
pub struct BoxStat {
    /// Minimum.
    pub min: f64,
    /// First quartile.
    pub q1: f64,
    /// Median.
    pub median: f64,
    /// Third quartile.
    pub q3: f64,
    /// Maximum.
    pub max: f64,
}

/// One box per channel, with horizontal threshold lines; per-channel
/// thresholds (`per_box`) are drawn as short ticks over each box.
pub fn boxplot(
    title: &str,
    boxes: &[BoxStat],
    thresholds: &[Band],
    per_box: &[(f64, f64)],
    notes: &[String],
) -> String {
    let n = boxes.len().max(1);
    let pw = (n as f64 * 12.0).clamp(400.0, 3000.0);
    let (w, h) = (pw + 130.0, 440.0 + 14.0 * notes.len() as f64);
    let mut svg = Svg::new(w, h, title);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for b in boxes {
        lo = lo.min(b.min);
        hi = hi.max(b.max);
    }
    for t in thresholds {
        lo = lo.min(t.from);
        hi = hi.max(t.from);
    }
    let pad = (hi - lo).abs() * 0.05;
    let ax = Axes::new(
        70.0,
        40.0,
        pw,
        320.0,
        (-0.5, n as f64 - 0.5),
        (lo - pad, hi + pad),
    );
    ax.draw(&mut svg, "channel", "value", false);
    let every = (n / 40).max(1);
    let bw = (ax.w / n as f64 * 0.6).max(1.0);
    for (i, b) in boxes.iter().enumerate() {
        let x = ax.px(i as f64);
        if i % every == 0 {
            svg.text(
                x,
                ax.y0 + ax.h + 14.0,
                &i.to_string(),
                "middle",
                9.0,
                "tick",
            );
        }
        svg.line(x, ax.py(b.min), x, ax.py(b.max), "#555", 1.0, "", "whisker");
        svg.rect(
            x - bw / 2.0,
            ax.py(b.q3),
            bw,
            ax.py(b.q1) - ax.py(b.q3),
            PALETTE[0],
            "box",
            0.6,
        );
        svg.line(
            x - bw / 2.0,
            ax.py(b.median),
            x + bw / 2.0,
            ax.py(b.median),
            "#000",
            1.5,
            "",
            "median",
        );
    }
    for (i, &(a, b)) in per_box.iter().enumerate().take(n) {
        let x = ax.px(i as f64);
        for v in [a, b] {
            if v.is_finite() {
                svg.line(
                    x - bw / 2.0,
                    ax.py(v),
                    x + bw / 2.0,
                    ax.py(v),
                    "#d62728",
                    1.5,
                    "",
                    "threshold",
                );
            }
        }
    }
    for t in thresholds {
        let y = ax.py(t.from);
        svg.line(
            ax.x0,
            y,
            ax.x0 + ax.w,
            y,
            "#d62728",
            1.2,
            "6 3",
            "threshold",
        );
        svg.text(
            ax.x0 + ax.w + 4.0,
            y + 4.0,
            &t.label,
            "start",
            10.0,
            "threshold-label",
        );
    }
    for (k, s) in notes.iter().enumerate() {
        svg.text(ax.x0, 420.0 + 14.0 * k as f64, s, "start", 11.0, "note");
    }
    svg.finish()
}

/// Curves over graph positions (`labels` name each position), one per series.
pub fn curves(
    title: &str,
    labels: &[String],
    series: &[(String, Vec<f64>)],
    ylabel: &str,
    notes: &[String],
) -> String {
    let n = labels.len().max(1);
    let pw = (n as f64 * 10.0).clamp(600.0, 3000.0);
    let (w, h) = (pw + 260.0, 560.0 + 14.0 * notes.len() as f64);
    let mut svg = Svg::new(w, h, title);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in series
        .iter()
        .flat_map(|s| s.1.iter())
        .filter(|v| v.is_finite())
    {
        lo = lo.min(*v);
        hi = hi.max(*v);
    }
    let pad = ((hi - lo).abs() * 0.05).max(1e-6);
    let ax = Axes::new(
        70.0,
        40.0,
        pw,
        320.0,
        (-0.5, n as f64 - 0.5),
        (lo - pad, hi + pad),
    );
    ax.draw(&mut svg, "", ylabel, false);
    let every = (n / 60).max(1);
    for (i, l) in labels.iter().enumerate().step_by(every) {
        let short: String = l.chars().take(28).collect();
        svg.text_rot(
            ax.px(i as f64),
            ax.y0 + ax.h + 10.0,
            &short,
            "end",
            9.0,
            -60.0,
        );
    }
    for (k, (_, v)) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let pts: Vec<(f64, f64)> = v
            .iter()
            .enumerate()
            .map(|(i, y)| {
                (
                    ax.px(i as f64),
                    if y.is_finite() { ax.py(*y) } else { f64::NAN },
                )
            })
            .collect();
        svg.path(&pts, color, "none", "curve");
        for p in pts.iter().filter(|p| p.1.is_finite()) {
            svg.dot(p.0, p.1, 2.0, color, "point");
        }
    }
    let items: Vec<(&str, &str)> = series
        .iter()
        .enumerate()
        .map(|(k, s)| (s.0.as_str(), PALETTE[k % PALETTE.len()]))
        .collect();
    svg.legend(ax.x0 + ax.w + 12.0, ax.y0 + 10.0, &items);
    for (k, s) in notes.iter().enumerate() {
        svg.text(ax.x0, 540.0 + 14.0 * k as f64, s, "start", 11.0, "note");
    }
    svg.finish()
}

/// Horizontal bars, one per row (label, bar length ≥ 0, text shown at the end).
pub fn bars(title: &str, rows: &[(String, f64, String)], xlabel: &str) -> String {
    let n = rows.len().max(1);
    let ph = 16.0 * n as f64;
    let (w, h) = (900.0, ph + 100.0);
    let mut svg = Svg::new(w, h, title);
    let hi = rows
        .iter()
        .map(|r| r.1)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let ax = Axes::new(
        260.0,
        40.0,
        520.0,
        ph,
        (0.0, if hi > 0.0 { hi * 1.05 } else { 1.0 }),
        (0.0, n as f64),
    );
    for t in ticks(ax.xr.0, ax.xr.1, 6) {
        let x = ax.px(t);
        svg.line(x, ax.y0, x, ax.y0 + ax.h, "#e8e8e8", 1.0, "", "gridline");
        svg.text(x, ax.y0 + ax.h + 16.0, &num(t), "middle", 10.0, "tick");
    }
    svg.line(ax.x0, ax.y0, ax.x0, ax.y0 + ax.h, "#333", 1.0, "", "axis");
    svg.text(
        ax.x0 + ax.w / 2.0,
        ax.y0 + ax.h + 34.0,
        xlabel,
        "middle",
        11.0,
        "label",
    );
    for (i, (label, v, shown)) in rows.iter().enumerate() {
        let y = ax.y0 + 16.0 * i as f64;
        let len = if v.is_finite() {
            ax.px(*v) - ax.x0
        } else {
            ax.w
        };
        let color = if v.is_finite() {
            PALETTE[0]
        } else {
            PALETTE[1]
        };
        svg.rect(ax.x0, y + 2.0, len.max(0.5), 12.0, color, "bar", 0.8);
        let short: String = label.chars().take(40).collect();
        svg.text(ax.x0 - 6.0, y + 12.0, &short, "end", 10.0, "label");
        svg.text(
            ax.x0 + len.max(0.5) + 4.0,
            y + 12.0,
            shown,
            "start",
            10.0,
            "value",
        );
    }
    svg.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        let t = ticks(0.0, 1.0, 5);
        assert_eq!(t.len(), 6);
        assert_eq!(t[0], 0.0);
        assert!((t[5] - 1.0).abs() < 1e-12);
        assert!(ticks(-3.0, 7.0, 5).contains(&0.0));
    }

    #[test]
    fn text_is_escaped() {
        let mut s = Svg::new(10.0, 10.0, "a<b & \"c\"");
        s.text(0.0, 0.0, "x>y", "start", 10.0, "t");
        let out = s.finish();
        assert!(out.contains("a&lt;b &amp; &quot;c&quot;"));
        assert!(out.contains("x&gt;y"));
    }
}

//! Heatmaps: PNG files drawn with `plotters` (bitmap backend) and colored terminal tables.
//!
//! Text is rendered with DejaVu Sans, embedded in the `vene` binary (`src/bin/vene/plot/DejaVuSans.ttf`, under
//! the Bitstream Vera license in `src/bin/vene/plot/LICENSE-DejaVu.txt`) and registered with plotters'
//! `ab_glyph` renderer, so drawing needs no system fonts.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;
use serde::Serialize;
use std::path::Path;
use std::sync::Once;
use vene::error::{Error, Result};
use vene::invalid;

static FONT: &[u8] = include_bytes!("plot/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut failed = false;
    ONCE.call_once(|| {
        failed = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err();
    });
    if failed {
        return Err(invalid!("the embedded plot font could not be read"));
    }
    Ok(())
}

/// Color scales: white to a dark color, or blue-white-red around zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Palette {
    Purples,
    Greens,
    Reds,
    Blues,
    /// Blue for negative, white at zero, red for positive (the range is made symmetric).
    Diverging,
}

impl Palette {
    /// The color of `t` in 0..=1 along the scale.
    pub fn rgb(self, t: f32) -> (u8, u8, u8) {
        let t = if t.is_finite() {
            t.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let lerp = |a: (f32, f32, f32), b: (f32, f32, f32), t: f32| {
            (
                (a.0 + (b.0 - a.0) * t).round() as u8,
                (a.1 + (b.1 - a.1) * t).round() as u8,
                (a.2 + (b.2 - a.2) * t).round() as u8,
            )
        };
        let white = (255.0, 255.0, 255.0);
        let ramp = |mid: (f32, f32, f32), dark: (f32, f32, f32)| {
            if t < 0.5 {
                lerp(white, mid, t * 2.0)
            } else {
                lerp(mid, dark, (t - 0.5) * 2.0)
            }
        };
        match self {
            Palette::Purples => ramp((158.0, 154.0, 200.0), (63.0, 0.0, 125.0)),
            Palette::Greens => ramp((116.0, 196.0, 118.0), (0.0, 68.0, 27.0)),
            Palette::Reds => ramp((251.0, 106.0, 74.0), (103.0, 0.0, 13.0)),
            Palette::Blues => ramp((107.0, 174.0, 214.0), (8.0, 48.0, 107.0)),
            Palette::Diverging => {
                if t < 0.5 {
                    lerp((33.0, 102.0, 172.0), white, t * 2.0)
                } else {
                    lerp(white, (178.0, 24.0, 43.0), (t - 0.5) * 2.0)
                }
            }
        }
    }
}

/// How cell values print in terminal tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ValueFormat {
    /// A probability shown as a whole percentage.
    Percent,
    /// A number with this many decimals.
    Decimal(usize),
}

impl ValueFormat {
    fn show(self, v: f32) -> String {
        match self {
            ValueFormat::Percent => format!("{:.0}", v * 100.0),
            ValueFormat::Decimal(d) => format!("{v:.d$}"),
        }
    }
}

/// One heatmap: `values[row][col]`, rows drawn top to bottom.
#[derive(Debug, Clone, Serialize)]
pub struct Heatmap {
    pub title: String,
    pub row_labels: Vec<String>,
    pub col_labels: Vec<String>,
    /// What the rows and columns are ("token", "layer").
    pub row_name: String,
    pub col_name: String,
    /// What the colors mean, shown on the color bar ("P( Madrid)").
    pub value_name: String,
    /// `None` cells were not computed and are drawn gray.
    pub values: Vec<Vec<Option<f32>>>,
    /// Color range; the data's min and max when `None`.
    pub range: Option<(f32, f32)>,
    pub palette: Palette,
    pub format: ValueFormat,
}

impl Heatmap {
    fn check(&self) -> Result<()> {
        if self.values.len() != self.row_labels.len()
            || self.values.iter().any(|r| r.len() != self.col_labels.len())
        {
            return Err(invalid!(
                "heatmap '{}': values are not {} x {}",
                self.title,
                self.row_labels.len(),
                self.col_labels.len()
            ));
        }
        if self.row_labels.is_empty() || self.col_labels.is_empty() {
            return Err(invalid!("heatmap '{}' has no cells", self.title));
        }
        Ok(())
    }

    /// The color range in force.
    pub fn bounds(&self) -> (f32, f32) {
        let (lo, hi) = self.range.unwrap_or_else(|| {
            let vals = self.values.iter().flatten().flatten().copied();
            let lo = vals.clone().fold(f32::INFINITY, f32::min);
            let hi = vals.fold(f32::NEG_INFINITY, f32::max);
            if lo.is_finite() {
                (lo, hi)
            } else {
                (0.0, 1.0)
            }
        });
        if self.palette == Palette::Diverging {
            let m = lo.abs().max(hi.abs()).max(1e-6);
            return (-m, m);
        }
        if hi - lo < 1e-9 {
            (lo, lo + 1e-6)
        } else {
            (lo, hi)
        }
    }

    /// The color of `v` in this heatmap's scale.
    pub fn color(&self, v: f32) -> (u8, u8, u8) {
        let (lo, hi) = self.bounds();
        self.palette.rgb((v - lo) / (hi - lo))
    }
}

const CELL: u32 = 22;
const PAD: u32 = 12;
const TITLE_H: u32 = 34;
const BAR_W: u32 = 16;

fn panel_size(h: &Heatmap, label_w: u32, tick_w: u32) -> (u32, u32) {
    let cols = h.col_labels.len() as u32;
    let rows = h.row_labels.len() as u32;
    let w = PAD + label_w + 8 + cols * CELL + 20 + BAR_W + 6 + tick_w + PAD;
    let h = TITLE_H + (rows * CELL).max(120) + 56 + PAD;
    (w, h)
}

/// Draws `panels` side by side into one PNG file.
pub fn write_png(path: &Path, panels: &[Heatmap]) -> Result<()> {
    if panels.is_empty() {
        return Err(invalid!("nothing to plot"));
    }
    for p in panels {
        p.check()?;
    }
    register_font()?;
    let font = |size: f64| TextStyle::from((FAMILY, size).into_font());
    let label_style = font(13.0);
    // Text widths come from the font itself.
    let measure = |s: &str, st: &TextStyle| -> u32 {
        st.font
            .box_size(s)
            .map(|(w, _)| w)
            .unwrap_or(8 * s.len() as u32)
    };
    let layout: Vec<(u32, u32, (u32, u32))> = panels
        .iter()
        .map(|p| {
            let label_w = p
                .row_labels
                .iter()
                .map(|l| measure(l, &label_style))
                .max()
                .unwrap_or(0)
                .max(measure(&p.row_name, &label_style));
            let (lo, hi) = p.bounds();
            let tick_w = [lo, hi, (lo + hi) / 2.0]
                .iter()
                .map(|v| measure(&tick(*v), &label_style))
                .max()
                .unwrap_or(30)
                .max(measure(&p.value_name, &label_style).saturating_sub(BAR_W + 6));
            (label_w, tick_w, panel_size(p, label_w, tick_w))
        })
        .collect();
    let width: u32 = layout.iter().map(|l| l.2 .0).sum();
    let height: u32 = layout.iter().map(|l| l.2 .1).max().unwrap_or(100);
    let draw_err = |e: &dyn std::fmt::Display| Error::file(path, format!("drawing failed: {e}"));
    {
        let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(&e))?;
        let mut x_off = 0i32;
        for (p, &(label_w, _tick_w, (pw, _))) in panels.iter().zip(&layout) {
            draw_panel(&root, p, x_off, label_w, &font).map_err(|e| draw_err(&e))?;
            x_off += pw as i32;
        }
        root.present().map_err(|e| draw_err(&e))?;
    }
    Ok(())
}

fn tick(v: f32) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn draw_panel<'a>(
    root: &Area<'a>,
    h: &Heatmap,
    x_off: i32,
    label_w: u32,
    font: &dyn Fn(f64) -> TextStyle<'static>,
) -> std::result::Result<(), DrawingAreaErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>>
{
    let rows = h.row_labels.len() as i32;
    let cols = h.col_labels.len() as i32;
    let c = CELL as i32;
    let x0 = x_off + (PAD + label_w + 8) as i32;
    let y0 = TITLE_H as i32;
    let small = font(13.0);
    root.draw(&Text::new(
        h.title.clone(),
        (x_off + PAD as i32, 8),
        font(16.0),
    ))?;
    for (r, row) in h.values.iter().enumerate() {
        for (k, v) in row.iter().enumerate() {
            let (px, py) = (x0 + k as i32 * c, y0 + r as i32 * c);
            let color = match v {
                Some(v) => {
                    let (cr, cg, cb) = h.color(*v);
                    RGBColor(cr, cg, cb)
                }
                None => RGBColor(200, 200, 200),
            };
            root.draw(&Rectangle::new(
                [(px, py), (px + c, py + c)],
                color.filled(),
            ))?;
        }
    }
    root.draw(&Rectangle::new(
        [(x0, y0), (x0 + cols * c, y0 + rows * c)],
        BLACK.stroke_width(1),
    ))?;
    let right = small.pos(Pos::new(HPos::Right, VPos::Center));
    for (r, l) in h.row_labels.iter().enumerate() {
        root.draw(&Text::new(
            l.clone(),
            (x0 - 6, y0 + r as i32 * c + c / 2),
            right.clone(),
        ))?;
    }
    // Column labels, thinned so they do not overlap.
    let widest = h.col_labels.iter().map(|l| l.len()).max().unwrap_or(1) as i32;
    let step = ((widest * 8 + 4) / c + 1).max(1) as usize;
    let top = small.pos(Pos::new(HPos::Center, VPos::Top));
    for (k, l) in h.col_labels.iter().enumerate() {
        if k % step == 0 || k + 1 == h.col_labels.len() && (k % step) * 2 > step {
            root.draw(&Text::new(
                l.clone(),
                (x0 + k as i32 * c + c / 2, y0 + rows * c + 5),
                top.clone(),
            ))?;
        }
    }
    root.draw(&Text::new(
        h.col_name.clone(),
        (x0 + cols * c / 2, y0 + rows * c + 26),
        top.clone(),
    ))?;
    root.draw(&Text::new(
        h.row_name.clone(),
        (x0 - 6, y0 - 4),
        small.pos(Pos::new(HPos::Right, VPos::Bottom)),
    ))?;
    // Color bar.
    let bx = x0 + cols * c + 20;
    let bh = (rows * c).max(120);
    let steps = 64;
    let (lo, hi) = h.bounds();
    for i in 0..steps {
        let t = 1.0 - i as f32 / steps as f32;
        let (cr, cg, cb) = h.palette.rgb(t);
        let ya = y0 + i * bh / steps;
        let yb = y0 + (i + 1) * bh / steps;
        root.draw(&Rectangle::new(
            [(bx, ya), (bx + BAR_W as i32, yb)],
            RGBColor(cr, cg, cb).filled(),
        ))?;
    }
    root.draw(&Rectangle::new(
        [(bx, y0), (bx + BAR_W as i32, y0 + bh)],
        BLACK.stroke_width(1),
    ))?;
    let left = small.pos(Pos::new(HPos::Left, VPos::Center));
    for (frac, v) in [(0.0, hi), (0.5, (lo + hi) / 2.0), (1.0, lo)] {
        root.draw(&Text::new(
            tick(v),
            (bx + BAR_W as i32 + 5, y0 + (frac * bh as f32) as i32),
            left.clone(),
        ))?;
    }
    root.draw(&Text::new(
        h.value_name.clone(),
        (bx, y0 + bh + 8),
        small.pos(Pos::new(HPos::Left, VPos::Top)),
    ))?;
    Ok(())
}

/// The heatmap as a text table; with `color`, each cell gets its color as a 24-bit ANSI
/// background, with black or white digits to stay readable.
pub fn ansi_table(h: &Heatmap, color: bool) -> Result<String> {
    h.check()?;
    let cells: Vec<Vec<String>> = h
        .values
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| v.map(|v| h.format.show(v)).unwrap_or_else(|| "-".into()))
                .collect()
        })
        .collect();
    let w = cells
        .iter()
        .flatten()
        .map(|s| s.chars().count())
        .chain(h.col_labels.iter().map(|l| l.chars().count()))
        .max()
        .unwrap_or(1)
        + 1;
    let label_w = h
        .row_labels
        .iter()
        .map(|l| l.chars().count())
        .chain(std::iter::once(h.row_name.chars().count()))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    out.push_str(&format!("{}\n", h.title));
    out.push_str(&format!(
        "{:>label_w$} {}\n",
        h.row_name,
        h.col_name,
        label_w = label_w
    ));
    out.push_str(&format!("{:>label_w$} ", ""));
    for l in &h.col_labels {
        out.push_str(&format!("{l:>w$}"));
    }
    out.push('\n');
    for (r, row) in cells.iter().enumerate() {
        out.push_str(&format!("{:>label_w$} ", h.row_labels[r]));
        for (k, s) in row.iter().enumerate() {
            match (color, h.values[r][k]) {
                (true, Some(v)) => {
                    let (cr, cg, cb) = h.color(v);
                    let lum = 0.299 * cr as f32 + 0.587 * cg as f32 + 0.114 * cb as f32;
                    let fg = if lum > 140.0 { "30" } else { "97" };
                    out.push_str(&format!(
                        "\x1b[48;2;{cr};{cg};{cb}m\x1b[{fg}m{s:>w$}\x1b[0m"
                    ));
                }
                _ => out.push_str(&format!("{s:>w$}")),
            }
        }
        out.push('\n');
    }
    Ok(out)
}

/// Writes rows of cells as CSV, quoting fields that need it.
pub fn write_csv(path: &Path, header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut text = header.join(",");
    text.push('\n');
    for r in rows {
        text.push_str(&r.iter().map(|s| quote(s)).collect::<Vec<_>>().join(","));
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| Error::file(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Heatmap {
        Heatmap {
            title: "test".into(),
            row_labels: vec!["The".into(), " capital".into()],
            col_labels: vec!["0".into(), "1".into(), "2".into()],
            row_name: "token".into(),
            col_name: "layer".into(),
            value_name: "P".into(),
            values: vec![
                vec![Some(0.0), Some(0.5), Some(1.0)],
                vec![None, Some(0.25), Some(0.75)],
            ],
            range: None,
            palette: Palette::Purples,
            format: ValueFormat::Percent,
        }
    }

    #[test]
    fn palettes_run_white_to_dark() {
        assert_eq!(Palette::Purples.rgb(0.0), (255, 255, 255));
        assert_eq!(Palette::Diverging.rgb(0.5), (255, 255, 255));
        let (r, g, b) = Palette::Reds.rgb(1.0);
        assert!(r as u32 + g as u32 + b as u32 <= 200);
    }

    #[test]
    fn table_prints_every_cell() {
        let t = ansi_table(&sample(), false).unwrap();
        assert!(t.contains("100"), "{t}");
        assert!(t.contains("25"), "{t}");
        assert!(!t.contains('\x1b'));
        let c = ansi_table(&sample(), true).unwrap();
        assert!(c.contains("\x1b[48;2;"));
    }

    #[test]
    fn png_is_written_with_text() {
        let dir = std::env::temp_dir().join(format!("vene-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("h.png");
        write_png(&p, &[sample(), sample()]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        std::fs::remove_dir_all(&dir).ok();
    }
}

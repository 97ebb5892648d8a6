//! A small box layout and its SVG text: nested boxes with a few lines of text each, children stacked
//! in a column or in rows. The SVG groups nest exactly as the boxes do, each `<g>` with a class and
//! `data-*` attributes, so a test (or a script) can read the picture back as a tree.

use std::fmt::Write;

/// Width of one character of the 12 px monospace font (0.6 em).
const CHAR_W: f64 = 7.2;
/// Height of a line of text.
const LINE_H: f64 = 15.0;
/// Padding inside a box.
const PAD: f64 = 6.0;
/// Space between boxes.
const GAP: f64 = 6.0;
/// Longest line of a box, in characters; longer ones are cut with `…` (the box's tooltip has it all).
pub(super) const MAX_LINE: usize = 56;

/// How a box arranges its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// One under the other, stretched to the widest.
    Column,
    /// Side by side, at most this many per row (0: one row).
    Rows(usize),
}

/// One box of the picture.
#[derive(Debug, Clone)]
pub(super) struct Node {
    /// The group's class (`numa`, `pcie-root`, `device`, ...).
    pub class: String,
    /// `data-<key>="<value>"` attributes of the group.
    pub data: Vec<(&'static str, String)>,
    /// Text lines at the top of the box; the first is bold.
    pub lines: Vec<String>,
    /// A tooltip (`<title>`): the full text when lines were cut.
    pub title: Option<String>,
    /// Fill and stroke colours.
    pub fill: &'static str,
    pub stroke: String,
    pub stroke_width: f64,
    pub flow: Flow,
    pub children: Vec<Node>,
    // Computed by `measure` and `place`.
    w: f64,
    h: f64,
    x: f64,
    y: f64,
}

impl Node {
    pub(super) fn new(class: &str, fill: &'static str) -> Node {
        Node {
            class: class.to_owned(),
            data: Vec::new(),
            lines: Vec::new(),
            title: None,
            fill,
            stroke: "#555555".to_owned(),
            stroke_width: 1.0,
            flow: Flow::Column,
            children: Vec::new(),
            w: 0.0,
            h: 0.0,
            x: 0.0,
            y: 0.0,
        }
    }

    pub(super) fn data(mut self, key: &'static str, value: impl Into<String>) -> Node {
        self.data.push((key, value.into()));
        self
    }

    /// Adds a line, cut to [`MAX_LINE`] characters (the whole text goes to the tooltip).
    pub(super) fn line(self, text: impl Into<String>) -> Node {
        self.line_of(text.into(), MAX_LINE)
    }

    /// Adds a line of the title or legend, cut at 120 characters.
    pub(super) fn long_line(self, text: impl Into<String>) -> Node {
        self.line_of(text.into(), 2 * MAX_LINE + 8)
    }

    fn line_of(mut self, text: String, max: usize) -> Node {
        if text.chars().count() > max {
            let cut: String = text.chars().take(max.saturating_sub(1)).collect();
            let title = self.title.get_or_insert_with(String::new);
            if !title.is_empty() {
                title.push('\n');
            }
            title.push_str(&text);
            self.lines.push(cut + "…");
        } else {
            self.lines.push(text);
        }
        self
    }

    pub(super) fn flow(mut self, flow: Flow) -> Node {
        self.flow = flow;
        self
    }

    pub(super) fn child(mut self, child: Node) -> Node {
        self.children.push(child);
        self
    }

    pub(super) fn children(mut self, children: impl IntoIterator<Item = Node>) -> Node {
        self.children.extend(children);
        self
    }

    fn header_h(&self) -> f64 {
        self.lines.len() as f64 * LINE_H
    }

    /// Computes the natural size of the box and of everything in it.
    fn measure(&mut self) {
        let text_w = self
            .lines
            .iter()
            .map(|l| l.chars().count() as f64 * CHAR_W)
            .fold(0.0, f64::max);
        for c in &mut self.children {
            c.measure();
        }
        let (inner_w, inner_h) = match self.flow {
            Flow::Column => {
                let w = self.children.iter().map(|c| c.w).fold(0.0, f64::max);
                let h: f64 = self.children.iter().map(|c| c.h + GAP).sum();
                (w, h)
            }
            Flow::Rows(per_row) => {
                let per_row = if per_row == 0 {
                    self.children.len().max(1)
                } else {
                    per_row
                };
                let mut w: f64 = 0.0;
                let mut h = 0.0;
                for row in self.children.chunks(per_row) {
                    let row_w: f64 = row.iter().map(|c| c.w).sum::<f64>()
                        + GAP * row.len().saturating_sub(1) as f64;
                    w = w.max(row_w);
                    h += row.iter().map(|c| c.h).fold(0.0, f64::max) + GAP;
                }
                (w, h)
            }
        };
        let top = if self.lines.is_empty() { 0.0 } else { GAP };
        self.w = text_w.max(inner_w) + 2.0 * PAD;
        self.h =
            PAD + self.header_h() + top + inner_h - if inner_h > 0.0 { GAP } else { 0.0 } + PAD;
    }

    /// Places the box at (x, y) with width `w` (at least its natural width), and its children in it.
    fn place(&mut self, x: f64, y: f64, w: f64) {
        self.x = x;
        self.y = y;
        self.w = self.w.max(w);
        let inner_x = x + PAD;
        let inner_w = self.w - 2.0 * PAD;
        let mut cy = y + PAD + self.header_h() + if self.lines.is_empty() { 0.0 } else { GAP };
        match self.flow {
            Flow::Column => {
                for c in &mut self.children {
                    c.place(inner_x, cy, inner_w);
                    cy += c.h + GAP;
                }
            }
            Flow::Rows(per_row) => {
                let per_row = if per_row == 0 {
                    self.children.len().max(1)
                } else {
                    per_row
                };
                for row in self.children.chunks_mut(per_row) {
                    let row_h = row.iter().map(|c| c.h).fold(0.0, f64::max);
                    let mut cx = inner_x;
                    for c in row.iter_mut() {
                        // Boxes of a row share its height.
                        c.h = row_h;
                        let cw = c.w;
                        c.place(cx, cy, cw);
                        cx += cw + GAP;
                    }
                    cy += row_h + GAP;
                }
            }
        }
    }

    fn write_svg(&self, out: &mut String, depth: usize) {
        let indent = " ".repeat(depth.min(32));
        let _ = write!(out, "{indent}<g class=\"{}\"", escape(&self.class));
        for (key, value) in &self.data {
            let _ = write!(out, " data-{key}=\"{}\"", escape(value));
        }
        out.push_str(">\n");
        if let Some(title) = &self.title {
            let _ = writeln!(out, "{indent} <title>{}</title>", escape(title));
        }
        let _ = writeln!(
            out,
            "{indent} <rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"4\" fill=\"{}\" stroke=\"{}\" stroke-width=\"{}\"/>",
            self.x,
            self.y,
            self.w,
            self.h,
            self.fill,
            escape(&self.stroke),
            self.stroke_width
        );
        for (i, line) in self.lines.iter().enumerate() {
            let weight = if i == 0 { " font-weight=\"bold\"" } else { "" };
            let _ = writeln!(
                out,
                "{indent} <text x=\"{:.1}\" y=\"{:.1}\"{weight}>{}</text>",
                self.x + PAD,
                self.y + PAD + (i as f64 + 1.0) * LINE_H - 3.0,
                escape(line)
            );
        }
        for c in &self.children {
            c.write_svg(out, depth + 1);
        }
        let _ = writeln!(out, "{indent}</g>");
    }
}

/// The SVG document of a tree of boxes: laid out from the top left, sized to fit.
pub(super) fn to_svg(mut root: Node) -> String {
    root.measure();
    root.place(GAP, GAP, 0.0);
    let (w, h) = (root.w + 2.0 * GAP, root.h + 2.0 * GAP);
    let mut out = String::with_capacity(64 * 1024);
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" \
         font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\" font-size=\"12\" fill=\"#000000\">"
    );
    let _ = writeln!(
        out,
        " <rect x=\"0\" y=\"0\" width=\"{w:.0}\" height=\"{h:.0}\" fill=\"#ffffff\"/>"
    );
    root.write_svg(&mut out, 1);
    out.push_str("</svg>\n");
    out
}

/// Text for XML content and attribute values: `&<>"'` escaped, and characters XML 1.0 forbids
/// (control characters but tab and newline, U+FFFE/U+FFFF) replaced by U+FFFD. Labels come from kernel
/// text and user files: nothing in them can end a tag or an attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{fffe}' || c == '\u{ffff}' => {
                out.push('\u{fffd}');
            }
            c => out.push(c),
        }
    }
    out
}

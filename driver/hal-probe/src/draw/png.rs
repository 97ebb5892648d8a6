//! The picture as PNG: the SVG rasterized by resvg, text in the system's fonts (fontdb finds them;
//! where there are none, the boxes are drawn without their text).

use anyhow::Context;

/// Largest PNG side in pixels: a hostile machine description must not ask for gigabytes.
const MAX_SIDE: u32 = 16_384;

/// Renders SVG text (as [`super::draw_svg`] makes it) to PNG bytes at its own size (1 px per unit),
/// scaled down when a side would exceed 16384 pixels.
pub fn svg_to_png(svg: &str) -> anyhow::Result<Vec<u8>> {
    let mut options = resvg::usvg::Options::default();
    options.fontdb_mut().load_system_fonts();
    let tree = resvg::usvg::Tree::from_str(svg, &options).context("parsing the SVG picture")?;
    let size = tree.size();
    let scale = (MAX_SIDE as f32 / size.width().max(size.height())).min(1.0);
    let width = ((size.width() * scale).ceil() as u32).clamp(1, MAX_SIDE);
    let height = ((size.height() * scale).ceil() as u32).clamp(1, MAX_SIDE);
    let mut pixmap = resvg::tiny_skia::Pixmap::new(width, height)
        .with_context(|| format!("a {width}x{height} picture"))?;
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap.encode_png().context("encoding the PNG")
}

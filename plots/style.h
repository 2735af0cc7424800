#pragma once
// The house style of every moshi-ttt figure, in one place: colours, fonts, sizes, line widths.
// lib/plot/style.cpp turns these constants into mtt::plot::Style; `ttt-plot ... --style FILE.json`
// overrides any of them at run time (docs/formats.md, "Plot style"), `ttt-plot style` prints the
// effective style as JSON.
//
// Colours: the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies and
// in greyscale print), in the order series are given colours.

namespace mtt::plot::house {

inline constexpr unsigned kPalette[] = {
    0x0072B2,  // blue
    0xD55E00,  // vermillion
    0x009E73,  // bluish green
    0xCC79A7,  // reddish purple
    0xE69F00,  // orange
    0x56B4E9,  // sky blue
    0x000000,  // black
    0x999999,  // grey
};
inline constexpr unsigned kBackground = 0xFFFFFF;
inline constexpr unsigned kForeground = 0x222222;  // axes, ticks, text
inline constexpr unsigned kGrid = 0xDDDDDD;        // major-tick grid lines

// Sizes. Raster figures are width x height pixels per panel grid cell at 100 dpi equivalent;
// vector figures get the same geometry in points.
inline constexpr int kPanelWidth = 560;
inline constexpr int kPanelHeight = 400;
inline constexpr int kMaxColumns = 3;  // panels per row before wrapping

// Fonts: PLplot's font-characterisation integer picks the family; the cairo drivers map "sans"
// to the system sans-serif (DejaVu Sans on Debian). Sizes are scale factors of PLplot's default
// character height.
inline constexpr const char* kFontFamily = "sans";
inline constexpr double kCharHeightMm = 5.5;  // scale 1.0; the page is 72 px per inch: 5.5 mm = 15.6 px
inline constexpr double kTextScale = 0.85;   // tick labels, legend
inline constexpr double kLabelScale = 0.95;  // axis titles
inline constexpr double kTitleScale = 1.1;   // panel titles
inline constexpr double kSuptitleScale = 1.3;

inline constexpr double kLineWidth = 2.0;      // data lines (PLplot width units ~ pt)
inline constexpr double kAxisWidth = 1.0;
inline constexpr double kMarkerSizeMm = 1.6;   // marker radius
inline constexpr double kBandAlpha = 0.18;     // min-max bands
inline constexpr double kBarWidth = 0.8;       // fraction of a category slot

}  // namespace mtt::plot::house

#include "client/cli/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fp8serve::client {

namespace {

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// Enough decimals to tell ticks `step` apart, and no more.
std::string TickText(double v, double step) {
  const int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
  if (std::fabs(v) < step * 1e-6) v = 0;  // no "-0"
  return absl::StrFormat("%.*f", decimals, v);
}

}  // namespace

std::vector<double> NiceTicks(double lo, double hi, int target) {
  if (!(hi > lo)) hi = lo + (lo != 0 ? std::fabs(lo) : 1.0);
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  const double step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  std::vector<double> ticks;
  const double first = std::floor(lo / step + 1e-9) * step;
  for (double v = first; v <= hi + step * 0.999; v += step) ticks.push_back(v);
  return ticks;
}

std::string RenderSvgPlot(const PlotSpec& spec) {
  const double W = spec.width, H = spec.height;
  const double left = 80, right = 24, top = 48, bottom = 64;
  const double pw = W - left - right, ph = H - top - bottom;

  double xmax = 0, ymax = 0, ymin_pos = std::numeric_limits<double>::infinity();
  for (const PlotSeries& s : spec.series) {
    for (const auto& [x, y] : s.points) {
      xmax = std::max(xmax, x);
      ymax = std::max(ymax, y);
      if (y > 0) ymin_pos = std::min(ymin_pos, y);
    }
  }
  const std::vector<double> xt = NiceTicks(0, xmax > 0 ? xmax * 1.06 : 1, 6);
  const double x0 = xt.front(), x1 = xt.back();

  std::vector<double> yt;
  double y0, y1;
  const bool log_y = spec.log_y && std::isfinite(ymin_pos);
  if (log_y) {
    // Bounds and ticks on the 1-2-5 sequence, tight around the data; decades only when it spans many.
    auto step125 = [](double v, bool up) {
      const double d = std::pow(10.0, std::floor(std::log10(v) + 1e-9));
      const double m[] = {1, 2, 5, 10};
      if (up) {
        for (double k : m) {
          if (k * d >= v * (1 - 1e-9)) return k * d;
        }
      }
      for (int i = 3; i >= 0; --i) {
        if (m[i] * d <= v * (1 + 1e-9)) return m[i] * d;
      }
      return d;
    };
    // Some room beyond the data, for the points' labels.
    y0 = step125(ymin_pos / 1.4, false);
    y1 = step125(ymax * 1.2, true);
    if (y1 <= y0) y1 = step125(y0 * 1.5, true);
    const bool decades_only = std::log10(y1 / y0) > 3.5;
    for (int d = static_cast<int>(std::floor(std::log10(y0))); d <= static_cast<int>(std::ceil(std::log10(y1))); ++d) {
      for (double m : {1.0, 2.0, 5.0}) {
        const double v = m * std::pow(10.0, d);
        if ((m == 1.0 || !decades_only) && v >= y0 * (1 - 1e-9) && v <= y1 * (1 + 1e-9)) yt.push_back(v);
      }
    }
    // The axis' ends are labelled even when they fall between decades.
    if (yt.empty() || yt.front() > y0 * (1 + 1e-9)) yt.insert(yt.begin(), y0);
    if (yt.back() < y1 * (1 - 1e-9)) yt.push_back(y1);
  } else {
    yt = NiceTicks(0, ymax > 0 ? ymax * 1.05 : 1, 6);
    y0 = yt.front();
    y1 = yt.back();
  }
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) {
    const double f = log_y ? (std::log10(std::max(y, y0)) - std::log10(y0)) / (std::log10(y1) - std::log10(y0))
                           : (y - y0) / (y1 - y0);
    return top + (1 - f) * ph;
  };

  std::string o = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
      "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
      spec.width, spec.height, spec.width, spec.height);
  absl::StrAppend(&o, absl::StrFormat("<text x=\"%.1f\" y=\"28\" text-anchor=\"middle\" font-size=\"16\" "
                                      "font-weight=\"bold\">%s</text>\n",
                                      left + pw / 2, Escape(spec.title)));
  // Grid and ticks.
  for (double v : xt) {
    const double x = px(v);
    absl::StrAppend(&o, absl::StrFormat("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n",
                                        x, top, x, top + ph));
    absl::StrAppend(&o, absl::StrFormat("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", x,
                                        top + ph, x, top + ph + 5));
    absl::StrAppend(&o, absl::StrFormat("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x,
                                        top + ph + 19, TickText(v, xt.size() > 1 ? xt[1] - xt[0] : 1)));
  }
  for (double v : yt) {
    const double y = py(v);
    const double step = log_y ? v : (yt.size() > 1 ? yt[1] - yt[0] : 1);
    absl::StrAppend(&o, absl::StrFormat("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n",
                                        left, y, left + pw, y));
    absl::StrAppend(&o, absl::StrFormat("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n",
                                        left - 5, y, left, y));
    absl::StrAppend(&o, absl::StrFormat("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", left - 8, y + 4,
                                        TickText(v, step)));
  }
  // Axes and their labels.
  absl::StrAppend(&o, absl::StrFormat("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                                      "stroke=\"black\"/>\n",
                                      left, top, pw, ph));
  absl::StrAppend(&o, absl::StrFormat("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\">%s</text>\n",
                                      left + pw / 2, H - 18, Escape(spec.x_label)));
  absl::StrAppend(&o,
                  absl::StrFormat("<text x=\"18\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\" "
                                  "transform=\"rotate(-90 18 %.1f)\">%s</text>\n",
                                  top + ph / 2, top + ph / 2, Escape(spec.y_label + (log_y ? " (log scale)" : ""))));
  // Series: a polyline, a marker per point, and the point's label.
  for (const PlotSeries& s : spec.series) {
    std::string pts;
    for (const auto& [x, y] : s.points) absl::StrAppend(&pts, absl::StrFormat("%.1f,%.1f ", px(x), py(y)));
    absl::StrAppend(&o, absl::StrFormat("<polyline points=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s/>\n",
                                        pts, s.color, s.dashed ? " stroke-dasharray=\"6 4\"" : ""));
    for (size_t i = 0; i < s.points.size(); ++i) {
      const double x = px(s.points[i].first), y = py(s.points[i].second);
      absl::StrAppend(&o, absl::StrFormat("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>\n", x, y, s.color));
      if (i < s.point_labels.size() && !s.point_labels[i].empty()) {
        // Below right of the point, clear of a curve that rises to the right; above left instead
        // when it would run off the plot (at most about 7.5 px a character).
        const std::string& label = s.point_labels[i];
        const bool flip = x + 7 + 7.5 * static_cast<double>(label.size()) > left + pw;
        absl::StrAppend(&o, absl::StrFormat("<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"%s\"%s>%s</text>\n",
                                            flip ? x - 7 : x + 7, flip ? y - 8 : y + 15, s.color,
                                            flip ? " text-anchor=\"end\"" : "", Escape(label)));
      }
    }
  }
  // Legend, top left inside the plot.
  const double lx = left + 12, ly = top + 12;
  absl::StrAppend(&o, absl::StrFormat("<rect x=\"%.1f\" y=\"%.1f\" width=\"150\" height=\"%d\" fill=\"white\" "
                                      "fill-opacity=\"0.9\" stroke=\"#999\"/>\n",
                                      lx, ly, 10 + 20 * static_cast<int>(spec.series.size())));
  for (size_t i = 0; i < spec.series.size(); ++i) {
    const PlotSeries& s = spec.series[i];
    const double y = ly + 15 + 20 * static_cast<double>(i);
    absl::StrAppend(&o, absl::StrFormat("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                                        "stroke-width=\"2\"%s/>\n",
                                        lx + 8, y, lx + 36, y, s.color, s.dashed ? " stroke-dasharray=\"6 4\"" : ""));
    absl::StrAppend(&o,
                    absl::StrFormat("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>\n", lx + 22, y, s.color));
    absl::StrAppend(&o, absl::StrFormat("<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", lx + 44, y + 4, Escape(s.name)));
  }
  o += "</svg>\n";
  return o;
}

}  // namespace fp8serve::client

// A small line-chart writer for SVG (no library): axes with "nice" ticks (1, 2, 5 x 10^k; decades
// on a log axis), grid lines, axis labels, a title, a legend, and labelled points. The bench draws
// its throughput-latency curve with it.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace fp8serve::client {

struct PlotSeries {
  std::string name;
  std::string color = "#1f77b4";
  bool dashed = false;
  std::vector<std::pair<double, double>> points;  // (x, y), drawn and joined in this order
  std::vector<std::string> point_labels;          // optional, one per point
};

struct PlotSpec {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<PlotSeries> series;
  bool log_y = false;  // y must then be positive
  int width = 760;
  int height = 480;
};

std::string RenderSvgPlot(const PlotSpec& spec);

// Tick positions covering [lo, hi] with about `target` steps of 1, 2 or 5 x 10^k (exposed for tests).
std::vector<double> NiceTicks(double lo, double hi, int target = 5);

}  // namespace fp8serve::client

// The bench's reports: the SVG chart (ticks, escaping, well-formed, log axis), the table, CSV, JSON.
#include "client/cli/bench_report.h"

#include <algorithm>

#include "client/cli/svg_plot.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fp8serve::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

size_t Count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t i = s.find(what); i != std::string::npos; i = s.find(what, i + 1)) ++n;
  return n;
}

TEST(SvgPlotTest, NiceTicks) {
  EXPECT_THAT(NiceTicks(0, 10, 5), ElementsAre(0, 2, 4, 6, 8, 10));
  EXPECT_THAT(NiceTicks(0, 1640, 6), ElementsAre(0, 200, 400, 600, 800, 1000, 1200, 1400, 1600, 1800));
  const auto small = NiceTicks(0, 0.37, 5);
  EXPECT_DOUBLE_EQ(small[1] - small[0], 0.1);
  EXPECT_GE(small.back(), 0.37);
  EXPECT_THAT(NiceTicks(0, 0, 5), ElementsAre(0, 0.2, 0.4, 0.6000000000000001, 0.8, 1));
}

TEST(SvgPlotTest, DrawsAxesSeriesLegendAndEscapesText) {
  PlotSpec spec;
  spec.title = "a <b> & \"c\"";
  spec.x_label = "x";
  spec.y_label = "y";
  PlotSeries s;
  s.name = "p50";
  s.points = {{100, 1}, {200, 2}, {300, 4}};
  s.point_labels = {"c=1", "c=8", "c=64"};
  spec.series = {s};
  const std::string svg = RenderSvgPlot(spec);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_THAT(svg, HasSubstr("</svg>"));
  EXPECT_THAT(svg, HasSubstr("a &lt;b&gt; &amp; &quot;c&quot;"));
  EXPECT_THAT(svg, HasSubstr(">c=64</text>"));
  EXPECT_THAT(svg, HasSubstr(">p50</text>"));
  EXPECT_EQ(Count(svg, "<polyline"), 1u);
  EXPECT_EQ(Count(svg, "<circle"), 4u);  // three points and the legend's marker
  // Every opened element is closed (all ours are self-closing or text).
  EXPECT_EQ(Count(svg, "<text"), Count(svg, "</text>"));
  spec.log_y = true;
  spec.series[0].points = {{1, 0.5}, {2, 700}};
  const std::string log = RenderSvgPlot(spec);
  EXPECT_THAT(log, HasSubstr("(log scale)"));
  // A log axis hugs the data (with room for labels) on the 1-2-5 sequence: 0.2 to 1000 here.
  EXPECT_THAT(log, HasSubstr(">1000</text>"));
  EXPECT_THAT(log, HasSubstr(">0.2</text>"));
  EXPECT_THAT(log, ::testing::Not(HasSubstr(">0.1</text>")));
  EXPECT_THAT(log, ::testing::Not(HasSubstr(">2000</text>")));
  EXPECT_THAT(log, HasSubstr(">100</text>"));  // over 3.5 decades: decade ticks only
  EXPECT_THAT(log, ::testing::Not(HasSubstr(">200</text>")));
}

StepResult Step(double c, int64_t ok, double p50, double p99) {
  StepResult r;
  r.level = LoadLevel{false, c};
  r.seconds = 2;
  r.sent = ok + 1;
  r.ok = ok;
  r.errors = {{"UNAVAILABLE", 1}};
  r.first_error = "queue full";
  r.p50_ms = p50;
  r.p90_ms = p50 * 1.5;
  r.p99_ms = p99;
  r.p999_ms = p99 * 1.2;
  r.max_ms = p99 * 2;
  r.rows_per_request = 4;
  r.have_server = true;
  r.server.success = static_cast<uint64_t>(ok);
  r.server.fail = 1;
  r.server.queue_ns = static_cast<uint64_t>(ok) * 1000;
  r.server.compute_infer_ns = static_cast<uint64_t>(ok) * 3000;
  return r;
}

TEST(BenchReportTest, TableCsvJsonAndPlotAgree) {
  const std::vector<StepResult> steps = {Step(1, 1000, 0.5, 1.5), Step(8, 4000, 1.0, 4.0)};
  BenchSetup setup;
  setup.model = "mlp";
  setup.mode = "async";
  setup.batch = 4;

  const std::string table = FormatBenchTable(steps);
  EXPECT_THAT(table, HasSubstr("c=8"));
  EXPECT_THAT(table, HasSubstr("2000"));  // 4000 ok in 2 s
  EXPECT_THAT(table, HasSubstr("UNAVAILABLE 1"));
  EXPECT_THAT(table, HasSubstr("first error: queue full"));

  const std::string csv = BenchCsv(steps);
  EXPECT_EQ(Count(csv, "\n"), 3u);
  EXPECT_THAT(csv, HasSubstr("c=8,8,,2.0000,4001,4000,1,0,2000.00,8000.00"));

  const nlohmann::json j = nlohmann::json::parse(BenchJson(setup, steps));
  EXPECT_EQ(j["setup"]["model"], "mlp");
  ASSERT_EQ(j["steps"].size(), 2u);
  EXPECT_EQ(j["steps"][1]["ok"], 4000);
  EXPECT_EQ(j["steps"][1]["accounted"], true);
  EXPECT_DOUBLE_EQ(j["steps"][1]["server"]["queue_us_per_request"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(j["steps"][1]["server"]["compute_us_per_request"].get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(j["steps"][0]["latency_ms"]["p99"].get<double>(), 1.5);

  const std::string svg = BenchSvg(setup, steps);
  EXPECT_THAT(svg, HasSubstr("throughput (requests/s)"));
  EXPECT_THAT(svg, HasSubstr(">p50 latency</text>"));
  EXPECT_THAT(svg, HasSubstr(">p99 latency</text>"));
  EXPECT_EQ(Count(svg, "<polyline"), 2u);
}

}  // namespace
}  // namespace fp8serve::client

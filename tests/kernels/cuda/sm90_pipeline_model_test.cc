// A host model of the sm90 GEMM's load pipeline (sm90_fp8_gemm.cuh), run under many random
// interleavings: the producer and consumer warps of every CTA of one cluster, the mbarriers with
// PTX semantics (a phase completes when its pending arrivals and its transaction bytes both reach
// zero; try_wait.parity(p) passes once the phase of parity p has completed), and every TMA
// delivery and remote arrival as a separate event that may land at any later time, multicast
// deliveries to each destination independently. The producer and consumer steps are transcribed
// from the kernel (paired loads, the two stages a consumer of the 128-wide tile holds or the one of
// the wide tile, the release to every CTA of the cluster, the producer's final drain).
// Checked: no deadlock; a consumer that passes a full barrier finds every share of that group's
// A and B tiles in the stage; no share lands in a stage a consumer of that CTA still reads; and no
// delivery or arrival reaches a CTA after it has exited.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace {

struct Barrier {
  int init = 0;
  int pending = 0;
  long tx = 0;
  int phase = 0;  // completed phases so far
  bool PhaseDone(int parity) const { return (phase & 1) != parity; }  // the phase of this parity completed
  void Complete() {
    if (pending == 0 && tx == 0) {
      ++phase;
      pending = init;
    }
  }
  void Arrive() {
    --pending;
    Complete();
  }
  void ExpectTx(long bytes) { tx += bytes; }
  void CompleteTx(long bytes) {
    tx -= bytes;
    Complete();
  }
};

struct Config {
  int cluster_m = 1, cluster_n = 1, stages = 2, warps = 1;
  // Stages a consumer warp holds at once: 2 with the 128-wide tile's two accumulators (it issues
  // group g + 1 before it releases g), 1 with the wide tile's one (it releases g before g + 1)
  int held = 2;
  // The wide tile's ordered consumers (GemmConfig::ordered_consumers; warps == 2 stand for its two
  // warpgroups, held == 1): warpgroup 1 issues group q only after warpgroup 0 has (named barrier 1,
  // bar.sync after 0's bar.arrive), warpgroup 0 issues q + 1 only after 1 has issued q (named
  // barrier 2), and warpgroup 0 syncs once more at its end so that no arrival is left behind.
  bool ordered = false;
  // Mutations of the ordering, which the model must catch: one-way ordering (warpgroup 0 never waits
  // for 1, which never arrives for it), no final bar.sync, or a final bar.sync also when warpgroup 0
  // issued nothing (a CTA without a unit)
  enum class OrderMutation { kNone, kOneWay, kNoFinalSync, kFinalSyncAlways } order_mutation = OrderMutation::kNone;
  bool pair = false;
  std::vector<int> groups;  // per unit
};

constexpr long kABytes = 4, kBBytes = 4;  // a stage's A and B tiles, split into shares

class Model {
 public:
  Model(const Config& c, uint32_t seed) : c_(c), rng_(seed) {
    cs_ = c.cluster_m * c.cluster_n;
    ctas_.resize(cs_);
    for (Cta& t : ctas_) {
      t.full.assign(c.stages, Barrier{});
      t.empty.assign(c.stages, Barrier{});
      for (int s = 0; s < c.stages; ++s) {
        t.full[s].init = t.full[s].pending = 1;
        t.empty[s].init = t.empty[s].pending = c.warps * cs_;
      }
      t.a_tag.assign(c.stages, std::vector<int>(c.cluster_n, -1));
      t.b_tag.assign(c.stages, std::vector<int>(c.cluster_m, -1));
      t.readers.assign(c.stages, 0);
      t.warp.assign(c.warps, Warp{});
    }
  }

  // Runs to the end; returns "" or what went wrong.
  std::string Run() {
    for (long step = 0; step < 2000000; ++step) {
      if (!error_.empty()) return error_;
      // Everything that can move now: actors whose next step is enabled, and pending events
      std::vector<int> movable;
      for (int t = 0; t < cs_; ++t) {
        if (ProducerCanMove(t)) movable.push_back(Key(t, -1));
        for (int w = 0; w < c_.warps; ++w) {
          if (WarpCanMove(t, w)) movable.push_back(Key(t, w));
        }
      }
      const int actors = static_cast<int>(movable.size());
      const int choices = actors + static_cast<int>(events_.size());
      if (choices == 0) {
        for (int t = 0; t < cs_; ++t) {
          if (!Exited(t)) return absl::StrCat("deadlock: CTA ", t, " producer at op ", ctas_[t].p_op, " drained ",
                                              ctas_[t].p_drained);
        }
        return "";
      }
      const int pick = std::uniform_int_distribution<int>(0, choices - 1)(rng_);
      if (pick < actors) {
        const int t = movable[pick] / 1000, w = movable[pick] % 1000 - 1;
        if (w < 0) {
          ProducerStep(t);
        } else {
          WarpStep(t, w);
        }
      } else {
        const size_t e = static_cast<size_t>(pick - actors);
        const Event ev = events_[e];
        events_.erase(events_.begin() + static_cast<long>(e));
        Deliver(ev);
      }
    }
    return "no end after 2M steps";
  }

 private:
  struct Warp {
    int unit = 0, g_issued = 0, g_released = 0;  // in the current unit
    int issue_stage = 0, issue_phase = 0, release_stage = 0;
    long issued_total = 0;  // groups issued over every unit (ordered consumers)
    bool synced = false;    // passed the ordering bar.sync of the next issue (ordered consumers)
    bool done = false;
  };
  struct Cta {
    std::vector<Barrier> full, empty;
    std::vector<std::vector<int>> a_tag, b_tag;  // [stage][share]: the (unit, group) id it holds
    std::vector<int> readers;                     // warps holding the stage
    std::vector<Warp> warp;
    // Named barriers 1 and 2 of the ordered consumers: bar.arrive's not yet matched by a bar.sync.
    // A second arrival before the match would merge two generations (the barrier would complete
    // with one side's threads only): the model fails on it.
    int named_pending[2] = {0, 0};
    // Producer: the flat sequence of (unit, group) it fills, walked in steps of 1 or 2
    int p_unit = 0, p_g = 0, p_stage = 0, p_phase = 0, p_op = 0;
    int p_waited = 0;   // stages of the current step already waited for
    int p_issued = 0;   // groups of the current step already issued
    int p_drained = 0;  // final drain waits done
    bool p_done = false;
  };
  struct Event {
    enum Kind { kA, kB, kArrive } kind;
    int dst, stage, share, id;
  };

  static int Key(int t, int w) { return t * 1000 + w + 1; }
  int Rm(int rank) const { return rank % c_.cluster_m; }
  int Rn(int rank) const { return rank / c_.cluster_m; }
  int Groups(int unit) const { return c_.groups[unit]; }
  int Units() const { return static_cast<int>(c_.groups.size()); }
  static int Id(int unit, int g) { return unit * 1000 + g; }
  bool Exited(int t) const {
    const Cta& x = ctas_[t];
    if (!x.p_done) return false;
    for (const Warp& w : x.warp) {
      if (!w.done) return false;
    }
    return true;
  }
  void Fail(const std::string& what) {
    if (error_.empty()) error_ = what;
  }

  // ---- producer (transcribed from the kernel's producer branch) ----
  // Groups in the current step (the kernel's n): counted from the step's first group
  int StepSize(const Cta& x) const {
    const int step = c_.pair ? 2 : 1;
    return std::min(step, Groups(x.p_unit) - (x.p_g - x.p_issued));
  }
  // The empty-barrier wait the producer is at: the stage and the parity
  bool ProducerWait(const Cta& x, int* stage, int* parity) const {
    if (x.p_done) return false;
    if (x.p_unit < Units()) {
      const int n = StepSize(x);
      if (x.p_waited >= n) return false;  // issuing
      int s = x.p_stage;
      for (int i = 0; i < x.p_waited; ++i) s = s + 1 == c_.stages ? 0 : s + 1;
      *stage = s;
      *parity = ((s < x.p_stage ? x.p_phase ^ 1 : x.p_phase) ^ 1);
      return true;
    }
    *stage = x.p_stage;  // final drain (clusters only)
    *parity = x.p_phase ^ 1;
    return true;
  }
  bool ProducerCanMove(int t) const {
    const Cta& x = ctas_[t];
    if (x.p_done) return false;
    if (x.p_unit >= Units() && (cs_ == 1 || x.p_drained == c_.stages)) return true;  // finishing
    int s, parity;
    if (ProducerWait(x, &s, &parity)) return x.empty[s].PhaseDone(parity);
    return true;  // an issue
  }
  void Advance(Cta& x) {
    if (++x.p_stage == c_.stages) {
      x.p_stage = 0;
      x.p_phase ^= 1;
    }
  }
  void ProducerStep(int t) {
    Cta& x = ctas_[t];
    ++x.p_op;
    if (x.p_unit >= Units()) {
      if (cs_ == 1 || x.p_drained == c_.stages) {
        x.p_done = true;
        return;
      }
      ++x.p_drained;  // the wait passed (ProducerCanMove checked it)
      Advance(x);
      return;
    }
    const int n = StepSize(x);
    if (x.p_waited < n) {
      ++x.p_waited;  // the wait passed (ProducerCanMove checked it)
      return;
    }
    // Issue one group: expect the whole stage on the own full barrier, then this CTA's shares (A
    // to the CTAs of its M-tile, B to those of its N-tile)
    const int s = x.p_stage, id = Id(x.p_unit, x.p_g);
    x.full[s].ExpectTx(kABytes + kBBytes);
    x.full[s].Arrive();
    const int rm = Rm(t), rn = Rn(t);
    for (int j = 0; j < c_.cluster_n; ++j) events_.push_back({Event::kA, rm + c_.cluster_m * j, s, rn, id});
    for (int i = 0; i < c_.cluster_m; ++i) events_.push_back({Event::kB, c_.cluster_m * rn + i, s, rm, id});
    Advance(x);
    ++x.p_g;
    if (++x.p_issued == n) {  // the step's groups are all issued
      x.p_waited = x.p_issued = 0;
      if (x.p_g == Groups(x.p_unit)) {
        ++x.p_unit;
        x.p_g = 0;
      }
    }
  }

  // ---- consumer warp, 128-wide: issue(0); for g: issue(g + 1) if any; release(g) ----
  // ----                wide:      for g: issue(g); release(g) ----
  // The named barrier warp w syncs on before its next issue (ordered consumers), or -1 for none:
  // warpgroup 1 always on barrier 0 (of warpgroup 0's arrivals), warpgroup 0 on barrier 1 from its
  // second group on, and once more at its end
  int SyncBarrier(const Warp& k, int w) const {
    if (!c_.ordered || k.synced) return -1;
    if (w == 1) return k.unit < Units() ? 0 : -1;
    if (c_.order_mutation == Config::OrderMutation::kOneWay) return -1;
    if (c_.order_mutation == Config::OrderMutation::kNoFinalSync && k.unit >= Units()) return -1;
    if (c_.order_mutation == Config::OrderMutation::kFinalSyncAlways && k.unit >= Units()) return 1;
    return k.issued_total > 0 ? 1 : -1;
  }
  // Whether the warp's next step is an issue (else a release, or its exit past the last unit)
  bool WantIssue(const Warp& k) const {
    return k.unit < Units() && k.g_issued < Groups(k.unit) && k.g_issued < k.g_released + c_.held;
  }
  bool WarpCanMove(int t, int w) const {
    const Cta& x = ctas_[t];
    const Warp& k = x.warp[w];
    if (k.done) return false;
    const bool want_issue = WantIssue(k);
    if (want_issue || k.unit >= Units()) {
      const int b = SyncBarrier(k, w);
      if (b >= 0) return x.named_pending[b] > 0;  // the bar.sync
    }
    if (k.unit >= Units()) return true;  // exit
    if (want_issue) return x.full[k.issue_stage].PhaseDone(k.issue_phase);
    return true;  // a release
  }
  void WarpStep(int t, int w) {
    Cta& x = ctas_[t];
    Warp& k = x.warp[w];
    const bool want_issue = WantIssue(k);
    if (want_issue || k.unit >= Units()) {
      const int b = SyncBarrier(k, w);
      if (b >= 0) {  // passes the bar.sync (WarpCanMove checked the arrival)
        --x.named_pending[b];
        k.synced = true;
        return;
      }
    }
    if (k.unit >= Units()) {
      k.done = true;
      if (c_.ordered && (x.named_pending[0] != 0 || x.named_pending[1] != 0) && x.warp[0].done && x.warp[1].done) {
        Fail(absl::StrCat("CTA ", t, ": a named barrier has arrivals left at exit"));
      }
      return;
    }
    if (want_issue) {
      // Passed the full barrier: every share of this group must be in the stage
      const int s = k.issue_stage, id = Id(k.unit, k.g_issued);
      for (int v : x.a_tag[s]) {
        if (v != id) Fail(absl::StrCat("CTA ", t, " warp ", w, " read stage ", s, " for ", id, " but an A share holds ", v));
      }
      for (int v : x.b_tag[s]) {
        if (v != id) Fail(absl::StrCat("CTA ", t, " warp ", w, " read stage ", s, " for ", id, " but a B share holds ", v));
      }
      ++x.readers[s];
      if (++k.issue_stage == c_.stages) {
        k.issue_stage = 0;
        k.issue_phase ^= 1;
      }
      ++k.g_issued;
      if (c_.ordered) {
        // bar.arrive on the barrier the other warpgroup syncs on
        ++k.issued_total;
        k.synced = false;
        if (w == 1 && c_.order_mutation == Config::OrderMutation::kOneWay) return;
        int& pending = x.named_pending[w == 0 ? 0 : 1];
        if (pending != 0) Fail(absl::StrCat("CTA ", t, " warp ", w, ": a second bar.arrive before the bar.sync"));
        ++pending;
      }
      return;
    }
    // Release the oldest held stage to every CTA of the cluster (its own only without a cluster)
    const int s = k.release_stage;
    --x.readers[s];
    if (cs_ == 1) {
      x.empty[s].Arrive();  // a local arrive completes in the arriving thread
    } else {
      // remote arrives (through shared::cluster addresses, the own CTA's included) are in flight
      for (int dst = 0; dst < cs_; ++dst) events_.push_back({Event::kArrive, dst, s, 0, 0});
    }
    if (++k.release_stage == c_.stages) k.release_stage = 0;
    if (++k.g_released == Groups(k.unit)) {
      ++k.unit;
      k.g_issued = k.g_released = 0;
    }
  }

  void Deliver(const Event& e) {
    if (Exited(e.dst)) {
      Fail(absl::StrCat(e.kind == Event::kArrive ? "an arrival" : "a TMA share", " reached CTA ", e.dst,
                        " after it exited"));
      return;
    }
    Cta& x = ctas_[e.dst];
    if (e.kind == Event::kArrive) {
      x.empty[e.stage].Arrive();
      return;
    }
    if (x.readers[e.stage] != 0) {
      Fail(absl::StrCat("a share of ", e.id, " landed in stage ", e.stage, " of CTA ", e.dst, " while ",
                        x.readers[e.stage], " warps still read it"));
    }
    if (e.kind == Event::kA) {
      x.a_tag[e.stage][e.share] = e.id;
      x.full[e.stage].CompleteTx(kABytes / c_.cluster_n);
    } else {
      x.b_tag[e.stage][e.share] = e.id;
      x.full[e.stage].CompleteTx(kBBytes / c_.cluster_m);
    }
  }

  Config c_;
  std::mt19937 rng_;
  int cs_ = 1;
  std::vector<Cta> ctas_;
  std::deque<Event> events_;
  std::string error_;
};

TEST(Sm90PipelineModel, NoDeadlockNoOverwriteNoLateDeliveryUnderRandomInterleavings) {
  long runs = 0;
  for (const auto& [cm, cn] : {std::pair{1, 1}, std::pair{2, 1}, std::pair{1, 2}, std::pair{2, 2}}) {
    for (int stages : {2, 3, 4}) {
      for (bool pair : {false, true}) {
        if (pair && stages < 3) continue;  // the launcher refuses it
        for (int warps : {1, 2}) {
          for (int held : {1, 2}) {
            for (bool ordered : {false, true}) {
              if (ordered && (held != 1 || warps != 2)) continue;  // the wide tile's two warpgroups
              for (const std::vector<int>& groups :
                   {std::vector<int>{}, std::vector<int>{1}, std::vector<int>{2}, std::vector<int>{5},
                    std::vector<int>{1, 3, 2}, std::vector<int>{7, 1, 4, 4}}) {
                for (uint32_t seed = 0; seed < 40; ++seed) {
                  Config c;
                  c.cluster_m = cm;
                  c.cluster_n = cn;
                  c.stages = stages;
                  c.pair = pair;
                  c.warps = warps;
                  c.held = held;
                  c.ordered = ordered;
                  c.groups = groups;
                  const std::string err = Model(c, seed * 7919u + static_cast<uint32_t>(stages)).Run();
                  ASSERT_EQ(err, "") << "cluster " << cm << "x" << cn << " stages " << stages << " pair " << pair
                                     << " warps " << warps << " held " << held << " ordered " << ordered << " units "
                                     << groups.size() << " seed " << seed;
                  ++runs;
                }
              }
            }
          }
        }
      }
    }
  }
  std::printf("%ld random interleavings ran to the end\n", runs);
}

// The ordered consumers need both named barriers and warpgroup 0's final bar.sync: without the
// wait for warpgroup 1, warpgroup 0 can arrive twice before 1 syncs (two generations merge); without
// the final sync, an arrival is left at exit.
TEST(Sm90PipelineModel, OrderedConsumersNeedBothBarriersAndTheFinalSync) {
  struct Case {
    Config::OrderMutation mutation;
    std::vector<int> groups;
    const char* says;  // the failure the mutation must produce
  };
  for (const Case& m : {Case{Config::OrderMutation::kOneWay, {5, 3}, "a second bar.arrive before the bar.sync"},
                        Case{Config::OrderMutation::kNoFinalSync, {5, 3}, "arrivals left at exit"},
                        Case{Config::OrderMutation::kFinalSyncAlways, {}, "deadlock"}}) {
    int caught = 0;
    std::string first;
    for (uint32_t seed = 0; seed < 200; ++seed) {
      Config c;
      c.stages = 4;
      c.warps = 2;
      c.held = 1;
      c.ordered = true;
      c.order_mutation = m.mutation;
      c.groups = m.groups;
      const std::string err = Model(c, seed).Run();
      if (err.find(m.says) != std::string::npos) ++caught;
      if (!err.empty() && first.empty()) first = err;
    }
    EXPECT_GT(caught, 0) << "mutation " << static_cast<int>(m.mutation) << " never failed with \"" << m.says
                         << "\" (first failure: " << first << ")";
  }
}

// Why the launcher refuses paired loads on two stages: a consumer holds both, so the producer's
// wait for two free stages never ends.
TEST(Sm90PipelineModel, PairedLoadsOnTwoStagesDeadlock) {
  Config c;
  c.stages = 2;
  c.pair = true;
  c.groups = {4};
  const std::string err = Model(c, 1).Run();
  EXPECT_NE(err.find("deadlock"), std::string::npos) << err;
}

}  // namespace

// tcpint end to end: two "hosts" (netns + cgroup each, joined by a veth),
// one plugin instance per host loaded through the real `bpfmgr` binary,
// traffic between them, the option checked on the wire (tcpdump capture
// parsed here) and in the receiver's pinned maps (bpftool -j).
#include <arpa/inet.h>
#include <linux/sockios.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "tcpint.h"
#include "tcpint_options.hpp"
#include "test_support.hpp"
#include "two_hosts.hpp"

namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
namespace lab = bpfmgr::test::lab;
namespace bt = bpfmgr::test;

std::string cgroup2_root() {
  std::ifstream in("/proc/self/mounts");
  std::string dev, dir, type, rest;
  while (in >> dev >> dir >> type && std::getline(in, rest))
    if (type == "cgroup2") return dir;
  return "/sys/fs/cgroup/unified";
}

// ------------------------------------------------------------ capture

struct Segment {
  bool from_a = false;  // sent by the client side (port != server port)
  std::uint8_t flags = 0;
  std::uint16_t sport = 0, dport = 0;
  std::size_t payload = 0;
  std::vector<std::uint8_t> options;  // raw TCP options
};

// Our option in a segment's options, if present.
std::optional<tcpint_opt> find_option(const Segment& s, std::uint8_t kind,
                                      std::uint16_t exid) {
  const auto& o = s.options;
  for (std::size_t i = 0; i < o.size();) {
    if (o[i] == 0) break;
    if (o[i] == 1) {
      ++i;
      continue;
    }
    if (i + 1 >= o.size() || o[i + 1] < 2 || i + o[i + 1] > o.size()) break;
    std::uint8_t k = o[i], l = o[i + 1];
    if (k == kind && l == TCPINT_OPT_LEN &&
        ((o[i + 2] << 8) | o[i + 3]) == exid) {
      tcpint_opt opt;
      std::memcpy(&opt, &o[i], sizeof(opt));
      return opt;
    }
    i += l;
  }
  return std::nullopt;
}

bool has_kind(const Segment& s, std::uint8_t kind) {
  const auto& o = s.options;
  for (std::size_t i = 0; i < o.size();) {
    if (o[i] == 0) break;
    if (o[i] == 1) {
      ++i;
      continue;
    }
    if (i + 1 >= o.size() || o[i + 1] < 2) break;
    if (o[i] == kind) return true;
    i += o[i + 1];
  }
  return false;
}

// tcpdump -w on one veth end, parsed after stop().
class Capture {
 public:
  Capture(const lab::Host& h, std::uint16_t port) {
    file_ = "/tmp/" + bt::unique_name("tcpint-cap") + ".pcap";
    err_ = file_ + ".err";
    pid_ = fork();
    if (pid_ == 0) {
      int fd = ::open(err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      dup2(fd, 2);
      dup2(fd, 1);
      execlp("ip", "ip", "netns", "exec", h.netns.c_str(), "tcpdump", "-i",
             h.ifname.c_str(), "-n", "-U", "--immediate-mode", "-s", "256", "-w", file_.c_str(),
             "tcp", "port", std::to_string(port).c_str(), (char*)nullptr);
      _exit(127);
    }
    for (int i = 0; i < 300; ++i) {  // until tcpdump listens
      std::ifstream e(err_);
      std::stringstream ss;
      ss << e.rdbuf();
      if (ss.str().find("listening on") != std::string::npos) return;
      std::this_thread::sleep_for(10ms);
    }
  }
  ~Capture() {
    stop();
    if (!getenv("TCPINT_KEEP_PCAP")) {
      ::unlink(file_.c_str());
      ::unlink(err_.c_str());
    }
  }
  void stop() {
    if (pid_ <= 0) return;
    std::this_thread::sleep_for(100ms);
    ::kill(pid_, SIGINT);
    int st;
    waitpid(pid_, &st, 0);
    pid_ = -1;
  }
  // Segments of the capture; `server_port` tells the direction.
  std::vector<Segment> segments(std::uint16_t server_port) {
    stop();
    std::vector<Segment> out;
    std::ifstream in(file_, std::ios::binary);
    std::vector<std::uint8_t> d((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
    if (d.size() < 24) {
      std::ifstream e(err_);
      std::stringstream ss;
      ss << e.rdbuf();
      ADD_FAILURE() << "capture " << file_ << " has " << d.size()
                    << " bytes; tcpdump said: " << ss.str();
      return out;
    }
    std::size_t off = 24;
    while (off + 16 <= d.size()) {
      std::uint32_t incl;
      std::memcpy(&incl, &d[off + 8], 4);
      off += 16;
      if (off + incl > d.size()) break;
      const std::uint8_t* p = &d[off];
      std::size_t n = incl;
      off += incl;
      if (n < 14) continue;
      std::uint16_t et = (p[12] << 8) | p[13];
      std::size_t l3 = 14, l4;
      std::size_t ip_total;
      if (et == 0x0800) {
        l4 = l3 + (p[l3] & 0x0f) * 4u;
        ip_total = (p[l3 + 2] << 8) | p[l3 + 3];
        ip_total += l3;
        if (p[l3 + 9] != 6) continue;
      } else if (et == 0x86dd) {
        l4 = l3 + 40;
        ip_total = l3 + 40 + ((p[l3 + 4] << 8) | p[l3 + 5]);
        if (p[l3 + 6] != 6) continue;
      } else {
        continue;
      }
      if (l4 + 20 > n) continue;
      Segment s;
      s.sport = (p[l4] << 8) | p[l4 + 1];
      s.dport = (p[l4 + 2] << 8) | p[l4 + 3];
      std::size_t doff = (p[l4 + 12] >> 4) * 4u;
      s.flags = p[l4 + 13];
      if (l4 + doff > n) continue;
      s.options.assign(p + l4 + 20, p + l4 + doff);
      s.payload = ip_total > l4 + doff ? ip_total - l4 - doff : 0;
      s.from_a = s.dport == server_port;
      out.push_back(std::move(s));
    }
    return out;
  }

 private:
  pid_t pid_ = -1;
  std::string file_, err_;
};

constexpr std::uint8_t kFin = 0x01, kSyn = 0x02, kAck = 0x10;

// ------------------------------------------------------------- fixture

class Tcpint : public ::testing::Test {
 protected:
  void SetUp() override {
    hosts_ = std::make_unique<lab::TwoHosts>(cgroup2_root(), "t");
  }
  void TearDown() override {
    // Unpin before the cgroups go: PinRoot's destructor unpins too.
    pins_.reset();
    hosts_.reset();
  }

  struct Inst {
    std::string name;
    std::string cgroup;
    std::string extra;  // more option lines
  };
  // Loads instances through `bpfmgr load`; fails the test on error.
  void load(const std::vector<Inst>& insts) {
    std::ostringstream m;
    m << "pin_root = \"" << pins_->path() << "\"\n";
    for (const auto& i : insts)
      m << "[[instance]]\nname = \"" << i.name
        << "\"\nplugin = \"tcpint\"\n[instance.options]\ncgroup = \""
        << i.cgroup << "\"\n"
        << i.extra << "\n";
    auto path = bt::write_temp_file(m.str());
    auto r = bt::run_bpfmgr({"load", path});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err << "\nmanifest:\n" << m.str();
  }

  std::string map_pin(const std::string& inst, const std::string& map) {
    return pins_->path() + "/" + inst + "/maps/" + map;
  }
  json dump(const std::string& inst, const std::string& map) {
    auto r = bt::run({"bpftool", "-j", "map", "dump", "pinned",
                      map_pin(inst, map)});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(r.out.empty() ? "[]" : r.out);
  }
  std::map<std::string, std::uint64_t> counters(const std::string& inst) {
    static const char* names[TCPINT_C_MAX] = {
        "written", "parsed",  "rejected_magic", "rejected_len",
        "no_room", "tx_flows", "rx_flows",      "no_context",
        "syscall_updates", "inherited", "helper_errors", "deferred_full"};
    std::map<std::string, std::uint64_t> out;
    for (const auto& e : dump(inst, "counters")) {
      const auto& f = e.at("formatted");
      std::uint64_t sum = 0;
      for (const auto& v : f.at("values")) sum += v.at("value").get<std::uint64_t>();
      out[names[f.at("key").get<int>()]] = sum;
    }
    return out;
  }
  // The entry of a flow map whose key has these ports (host order).
  std::optional<json> flow(const std::string& inst, const std::string& map,
                           std::uint16_t lport, std::uint16_t rport) {
    for (const auto& e : dump(inst, map)) {
      const auto& k = e.at("formatted").at("key");
      if (k.at("local_port") == lport && k.at("remote_port") == rport)
        return e.at("formatted");
    }
    return std::nullopt;
  }

  std::unique_ptr<lab::TwoHosts> hosts_;
  std::unique_ptr<bt::PinRoot> pins_ = std::make_unique<bt::PinRoot>();
};

// Server in B: echoes every message, reports bytes at EOF, then closes.
std::unique_ptr<lab::Child> echo_server(const lab::Host& b,
                                        const std::string& addr,
                                        bool fastopen = false,
                                        int conns = 1) {
  return std::make_unique<lab::Child>(b, [=](lab::Channel& ch) {
    int lfd = lab::tcp_listen(addr, 0, fastopen);
    ch.send(std::to_string(lab::local_port(lfd)));
    for (int i = 0; i < conns; ++i) {
      int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return 3;
      auto n = lab::echo_until_eof(fd);
      ::close(fd);
      ch.send("done " + std::to_string(n));
    }
    return 0;
  });
}

// Client in A: connects, sends `msgs` known messages (each echoed), reports
// "sent <local port>", closes on the parent's "close".
std::unique_ptr<lab::Child> client(const lab::Host& a, const std::string& addr,
                                   std::uint16_t port, int msgs) {
  return std::make_unique<lab::Child>(a, [=](lab::Channel& ch) {
    int fd = lab::tcp_connect(addr, port);
    for (int i = 0; i < msgs; ++i) {
      std::string m = "tcpint-msg-" + std::to_string(i);
      if (!lab::send_all(fd, m.data(), m.size())) return 4;
      std::string back(m.size(), '\0');
      if (!lab::recv_exact(fd, back.data(), back.size()) || back != m)
        return 5;
      std::this_thread::sleep_for(5ms);
    }
    ch.send("sent " + std::to_string(lab::local_port(fd)));
    if (ch.recv() != "close") return 6;
    ::close(fd);
    return 0;
  });
}

std::uint16_t port_of(lab::Child& c) {
  return static_cast<std::uint16_t>(std::stoi(c.channel().recv()));
}
std::uint16_t sent_port(lab::Child& c) {
  auto l = c.channel().recv();
  EXPECT_EQ(l.rfind("sent ", 0), 0u) << "client said '" << l << "'";
  return l.size() > 5 ? static_cast<std::uint16_t>(std::stoi(l.substr(5))) : 0;
}

// ------------------------------------------------------------------ tests

TEST(TcpintOptions, SchemaValidateAndCidrs) {
  tcpint_cidr_key k;
  std::string why;
  ASSERT_TRUE(tcpint::parse_cidr("10.1.0.0/16", k, why));
  EXPECT_EQ(k.prefixlen, 96u + 16u);
  EXPECT_EQ(k.addr[10], 0xff);
  EXPECT_EQ(k.addr[12], 10);
  ASSERT_TRUE(tcpint::parse_cidr("fd00::/8", k, why));
  EXPECT_EQ(k.prefixlen, 8u);
  EXPECT_FALSE(tcpint::parse_cidr("10.0.0.0/33", k, why));
  EXPECT_FALSE(tcpint::parse_cidr("nonsense", k, why));
  bpfmgr::Options bad({{"exid", std::int64_t{0xF989}},
                       {"cidrs", std::vector<std::string>{"1.2.3.4/99"}}});
  auto p = tcpint::validate(bad);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].key, "exid");
  EXPECT_EQ(p[1].key, "cidrs");
  EXPECT_NE(tcpint::auto_sender_id("x"), 0);
}

// A comm field as bpftool prints it (a string, or an array of chars).
std::string comm_of(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  std::string out;
  for (const auto& c : v) {
    int ch = c.is_string() ? c.get<std::string>()[0] : c.get<int>();
    if (!ch) break;
    out += static_cast<char>(ch);
  }
  return out;
}
std::string proc_comm(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
  std::string c;
  std::getline(in, c);
  return c;
}

// Issue 16: `fallbacks = "always"` runs the forms Linux 6.1 runs (the
// probe-read syscall hook, the connecting task read through
// bpf_probe_read_kernel) on this kernel too; they record the same context.
TEST_F(Tcpint, FallbackFormsRecordTheSameContext) {
  load({{"host_a", hosts_->a.cgroup, "sender_id = 11\nfallbacks = \"always\""},
        {"host_b", hosts_->b.cgroup, "sender_id = 22\nfallbacks = \"always\""}});
  for (const char* inst : {"host_a", "host_b"}) {
    struct stat st {};
    EXPECT_EQ(::stat((pins_->path() + "/" + inst + "/progs/tcpint_sys_enter_probe").c_str(),
                     &st), 0) << inst;
    EXPECT_NE(::stat((pins_->path() + "/" + inst + "/progs/tcpint_sys_enter").c_str(), &st),
              0) << inst << ": the direct variant is loaded too";
  }
  auto srv = echo_server(hosts_->b, hosts_->b.addr4);
  auto sport = port_of(*srv);
  auto cli = client(hosts_->a, hosts_->b.addr4, sport, 3);
  auto cport = sent_port(*cli);
  ASSERT_NE(cport, 0);
  auto tx = flow("host_a", "flow_context_map", cport, sport);
  ASSERT_TRUE(tx) << dump("host_a", "flow_context_map").dump();
  const auto& txv = tx->at("value");
  EXPECT_EQ(txv.at("msg_count"), 3);
  EXPECT_EQ(txv.at("bytes"), 3 * std::string("tcpint-msg-0").size());
  EXPECT_EQ(txv.at("pid"), cli->pid());
  EXPECT_EQ(comm_of(txv.at("comm")), proc_comm(cli->pid()));
  auto rx = flow("host_b", "rx_context_map", sport, cport);
  ASSERT_TRUE(rx) << dump("host_b", "rx_context_map").dump();
  EXPECT_EQ(rx->at("value").at("trace_id"), txv.at("trace_id"));
  EXPECT_EQ(rx->at("value").at("msg_count"), 3);
  // B's recv hook recorded the thread's flow: its answers are in A's trace.
  auto back = flow("host_a", "rx_context_map", cport, sport);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->at("value").at("trace_id"), txv.at("trace_id"));
  cli->channel().send("close");
  EXPECT_EQ(cli->wait(), 0);
  EXPECT_EQ(srv->channel().recv().rfind("done", 0), 0u);
  EXPECT_EQ(srv->wait(), 0);
  auto ca = counters("host_a");
  EXPECT_GE(ca["syscall_updates"], 3u);
  EXPECT_EQ(ca["helper_errors"], 0u);
}

// Without syscall hooks only sock_ops saw the connecting task: its pid and
// comm, read at TCP_CONNECT_CB by the 6.1 form.
TEST_F(Tcpint, FallbackConnectTaskWithoutHooks) {
  const std::string opts = "\nsyscall_hooks = false\nfallbacks = \"always\"";
  load({{"host_a", hosts_->a.cgroup, "sender_id = 11" + opts},
        {"host_b", hosts_->b.cgroup, "sender_id = 22" + opts}});
  auto srv = echo_server(hosts_->b, hosts_->b.addr4);
  auto sport = port_of(*srv);
  auto cli = client(hosts_->a, hosts_->b.addr4, sport, 1);
  auto cport = sent_port(*cli);
  ASSERT_NE(cport, 0);
  auto tx = flow("host_a", "flow_context_map", cport, sport);
  ASSERT_TRUE(tx) << dump("host_a", "flow_context_map").dump();
  EXPECT_EQ(tx->at("value").at("pid"), cli->pid());
  EXPECT_EQ(tx->at("value").at("tid"), cli->pid());
  EXPECT_EQ(comm_of(tx->at("value").at("comm")), proc_comm(cli->pid()));
  EXPECT_EQ(tx->at("value").at("msg_count"), 0);  // no syscall hook
  cli->channel().send("close");
  EXPECT_EQ(cli->wait(), 0);
  EXPECT_EQ(srv->channel().recv().rfind("done", 0), 0u);
  EXPECT_EQ(srv->wait(), 0);
}

// A cgroup that does not exist is one error, from validate (the kernel
// requirements' parse of the options used to report it a second time).
TEST(TcpintOptions, MissingCgroupIsReportedOnce) {
  auto path = bt::write_temp_file(
      "pin_root = \"/sys/fs/bpf/tcpint-missing-cgroup\"\n[[instance]]\nname = \"t\"\n"
      "plugin = \"tcpint\"\n[instance.options]\ncgroup = \"no-such-cgroup-tcpint-test\"\n");
  for (const char* cmd : {"validate", "load"}) {
    auto r = bt::run_bpfmgr({cmd, path});
    EXPECT_EQ(r.exit_code, 2) << cmd << ": " << r.out << r.err;
    const std::string all = r.out + r.err;
    std::size_t n = 0;
    for (auto at = all.find("no-such-cgroup-tcpint-test: "); at != std::string::npos;
         at = all.find("no-such-cgroup-tcpint-test: ", at + 1))
      ++n;
    EXPECT_EQ(n, 1u) << cmd << ":\n" << all;
    EXPECT_NE(all.find("1 error;"), std::string::npos) << cmd << ":\n" << all;
  }
}

// Issue 20: the cgroup option resolves as validate checks it (the core's
// rule): "/x" is x under the cgroup2 mount, not the host path /x.
TEST_F(Tcpint, CgroupPathResolvesAsValidateChecksIt) {
  std::string root = cgroup2_root();
  const std::string& full = hosts_->a.cgroup;
  ASSERT_EQ(full.rfind(root + "/", 0), 0u) << full << " not under " << root;
  std::string rel = full.substr(root.size() + 1);
  auto options_with = [](const std::string& cgroup) {
    std::map<std::string, bpfmgr::OptionValue> v;
    for (const auto& spec : tcpint::option_schema())
      if (spec.default_value) v[spec.name] = *spec.default_value;
    v["cgroup"] = cgroup;
    return bpfmgr::Options(v);
  };
  for (const std::string& spelled : {"/" + rel, rel, full, rel + "/"}) {
    auto o = options_with(spelled);
    EXPECT_TRUE(tcpint::validate(o).empty()) << spelled;
    EXPECT_EQ(tcpint::settings_from(o, root, "x").cgroup_path, full) << spelled;
  }
  for (const std::string& spelled : {std::string(""), std::string("/")}) {
    auto s = tcpint::settings_from(options_with(spelled), root, "x");
    EXPECT_EQ(s.cgroup_path, root);
    EXPECT_EQ(s.cgroup_level, 0u);
  }
  // and a load with the short spelling attaches where validate said
  load({{"host_a", "/" + rel, "sender_id = 11"}});
  auto r = bt::run({"bpftool", "-j", "cgroup", "show", full});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("tcpint_sockops"), std::string::npos) << r.out;
  EXPECT_FALSE(tcpint::validate(options_with("/" + rel + "/../..")).empty());
}

// The main path: option on SYN, handshake ACK, data and FIN (not on other
// pure ACKs), the receiver's pinned map holds the sender's context, the
// sender's holds what its syscalls did.
TEST_F(Tcpint, ContextOnTheWireAndInReceiverMap) {
  load({{"host_a", hosts_->a.cgroup, "sender_id = 11\nexid = 0x5449"},
        {"host_b", hosts_->b.cgroup, "sender_id = 22\nexid = 0x5449"}});
  auto srv = echo_server(hosts_->b, hosts_->b.addr4);
  auto sport = port_of(*srv);
  Capture cap(hosts_->a, sport);
  auto cli = client(hosts_->a, hosts_->b.addr4, sport, 3);
  auto cport = sent_port(*cli);
  ASSERT_NE(cport, 0);

  // Sender side: syscall hooks joined (pid, fd) to the flow.
  auto tx = flow("host_a", "flow_context_map", cport, sport);
  ASSERT_TRUE(tx) << dump("host_a", "flow_context_map").dump();
  const auto& txv = tx->at("value");
  EXPECT_EQ(txv.at("msg_count"), 3);
  EXPECT_EQ(txv.at("bytes"), 3 * std::string("tcpint-msg-0").size());
  EXPECT_EQ(txv.at("pid"), cli->pid());
  EXPECT_EQ(txv.at("sender_id"), 11);
  EXPECT_EQ(txv.at("closed_ns"), 0);
  std::uint32_t trace = txv.at("trace_id");

  // Receiver side: B's rx map has A's context for the same flow.
  auto rx = flow("host_b", "rx_context_map", sport, cport);
  ASSERT_TRUE(rx) << dump("host_b", "rx_context_map").dump();
  const auto& rxv = rx->at("value");
  EXPECT_EQ(rxv.at("trace_id"), trace);
  EXPECT_EQ(rxv.at("sender_id"), 11);
  EXPECT_EQ(rxv.at("msg_count"), 3);
  EXPECT_EQ(rxv.at("version"), TCPINT_VERSION);
  EXPECT_EQ(rx->at("key").at("family"), AF_INET);
  // B answered within the same trace (propagation), as sender 22.
  auto back = flow("host_a", "rx_context_map", cport, sport);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->at("value").at("trace_id"), trace);
  EXPECT_EQ(back->at("value").at("sender_id"), 22);

  cli->channel().send("close");
  EXPECT_EQ(cli->wait(), 0);
  EXPECT_EQ(srv->channel().recv().rfind("done", 0), 0u);
  EXPECT_EQ(srv->wait(), 0);

  // The wire.
  auto segs = cap.segments(sport);
  ASSERT_FALSE(segs.empty());
  int syn = 0, hs_ack = 0, data = 0, fin = 0, other_acks_with = 0,
      b_data = 0;
  std::uint32_t last_count = 0;
  bool first_pure_ack = true;
  for (const auto& s : segs) {
    auto o = find_option(s, 254, 0x5449);
    bool pure_ack = s.flags == kAck && s.payload == 0;
    if (s.from_a) {
      if (s.flags & kSyn) {
        ASSERT_TRUE(o) << "SYN without option";
        EXPECT_TRUE(o->flags & TCPINT_F_SYN);
        EXPECT_EQ(ntohs(o->sender_id), 11);
        EXPECT_EQ(ntohl(o->trace_id), trace);
        EXPECT_EQ(ntohl(o->msg_count), 0u);
        ++syn;
      } else if (s.flags & kFin) {
        ASSERT_TRUE(o) << "FIN without option";
        EXPECT_TRUE(o->flags & TCPINT_F_FIN);
        EXPECT_EQ(ntohl(o->msg_count), 3u);
        ++fin;
      } else if (s.payload > 0) {
        ASSERT_TRUE(o) << "data segment without option";
        EXPECT_EQ(ntohl(o->msg_count), last_count + 1);
        last_count = ntohl(o->msg_count);
        EXPECT_EQ(o->version, TCPINT_VERSION);
        EXPECT_EQ(ntohs(o->exid), 0x5449);
        EXPECT_EQ(ntohl(o->trace_id), trace);
        ++data;
      } else if (pure_ack && first_pure_ack) {
        first_pure_ack = false;
        EXPECT_TRUE(o) << "handshake ACK without option";
        hs_ack += o ? 1 : 0;
      } else if (pure_ack && o) {
        ++other_acks_with;
      }
    } else if (s.payload > 0) {
      ASSERT_TRUE(o) << "B's data segment without option";
      EXPECT_EQ(ntohs(o->sender_id), 22);
      EXPECT_TRUE(o->flags & TCPINT_F_PASSIVE);
      ++b_data;
    }
  }
  EXPECT_EQ(syn, 1);
  EXPECT_EQ(hs_ack, 1);
  EXPECT_EQ(data, 3);
  EXPECT_EQ(fin, 1);
  EXPECT_EQ(other_acks_with, 0);
  EXPECT_EQ(b_data, 3);

  auto ca = counters("host_a"), cb = counters("host_b");
  EXPECT_GE(ca["written"], 6u);  // SYN, ACK, 3 data, FIN
  EXPECT_GE(cb["parsed"], 5u);
  EXPECT_EQ(cb["rejected_magic"] + cb["rejected_len"], 0u);
  EXPECT_EQ(ca["no_room"], 0u);
  EXPECT_EQ(ca["helper_errors"] + cb["helper_errors"], 0u);
  // FIN seen and the flow marked closed on the receiver.
  auto rx2 = flow("host_b", "rx_context_map", sport, cport);
  ASSERT_TRUE(rx2);
  EXPECT_TRUE(rx2->at("value").at("flags").get<int>() & TCPINT_F_FIN);

  // `bpfmgr status` shows the counters.
  auto st = bt::run_bpfmgr({"status", "--pin-root", pins_->path()});
  EXPECT_EQ(st.exit_code, 0) << st.err;
  EXPECT_NE(st.out.find("options_written"), std::string::npos) << st.out;
}

// segments = [syn, ack, data_changed, fin]: data segments carry the option
// only when the context (trace id, flags) differs from the last option the
// socket wrote. A's handshake ACK already carried it, so none of A's data
// segments does; B (a listener's child: no SYN-ACK option) writes it on its
// first data segment only. The FIN still brings the final msg_count.
TEST_F(Tcpint, DataChangedWritesOnlyChanges) {
  const std::string segs =
      "\nsegments = [\"syn\", \"ack\", \"data_changed\", \"fin\"]";
  load({{"host_a", hosts_->a.cgroup, "sender_id = 11" + segs},
        {"host_b", hosts_->b.cgroup, "sender_id = 22" + segs}});
  auto srv = echo_server(hosts_->b, hosts_->b.addr4);
  auto sport = port_of(*srv);
  Capture cap(hosts_->a, sport);
  auto cli = client(hosts_->a, hosts_->b.addr4, sport, 3);
  auto cport = sent_port(*cli);
  ASSERT_NE(cport, 0);
  auto tx = flow("host_a", "flow_context_map", cport, sport);
  ASSERT_TRUE(tx);
  EXPECT_EQ(tx->at("value").at("msg_count"), 3);
  std::uint32_t trace = tx->at("value").at("trace_id");
  cli->channel().send("close");
  EXPECT_EQ(cli->wait(), 0);
  EXPECT_EQ(srv->channel().recv().rfind("done", 0), 0u);
  EXPECT_EQ(srv->wait(), 0);

  int syn = 0, hs_ack = 0, a_data = 0, a_data_with = 0, fin = 0,
      b_data = 0, b_data_with = 0;
  bool first_pure_ack = true;
  for (const auto& s : cap.segments(sport)) {
    auto o = find_option(s, 254, 0x5449);
    bool pure_ack = s.flags == kAck && s.payload == 0;
    if (s.from_a) {
      if (s.flags & kSyn) {
        EXPECT_TRUE(o) << "SYN without option";
        ++syn;
      } else if (s.flags & kFin) {
        ASSERT_TRUE(o) << "FIN without option";
        EXPECT_EQ(ntohl(o->msg_count), 3u);
        EXPECT_EQ(ntohl(o->trace_id), trace);
        ++fin;
      } else if (s.payload > 0) {
        ++a_data;
        a_data_with += o ? 1 : 0;
      } else if (pure_ack && first_pure_ack) {
        first_pure_ack = false;
        EXPECT_TRUE(o) << "handshake ACK without option";
        hs_ack += o ? 1 : 0;
      }
    } else if (s.payload > 0) {
      ++b_data;
      if (o) {
        EXPECT_EQ(b_data, 1) << "only B's first data segment carries it";
        EXPECT_EQ(ntohs(o->sender_id), 22);
        ++b_data_with;
      }
    }
  }
  EXPECT_EQ(syn, 1);
  EXPECT_EQ(hs_ack, 1);
  EXPECT_EQ(a_data, 3);
  EXPECT_EQ(a_data_with, 0);
  EXPECT_EQ(fin, 1);
  EXPECT_EQ(b_data, 3);
  EXPECT_EQ(b_data_with, 1);
  // The receiver still has the sender's context, final count from the FIN.
  auto rx = flow("host_b", "rx_context_map", sport, cport);
  ASSERT_TRUE(rx);
  EXPECT_EQ(rx->at("value").at("trace_id"), trace);
  EXPECT_EQ(rx->at("value").at("msg_count"), 3);
  EXPECT_TRUE(rx->at("value").at("flags").get<int>() & TCPINT_F_FIN);
  auto ca = counters("host_a");
  EXPECT_EQ(ca["helper_errors"], 0u);
}

// data_changed reserves no option space when the kernel sizes full
// segments: a bulk sender keeps the MSS it has without the plugin, while
// `data` (an option on every segment) gives the option's padded length of
// each segment to it.
// A changed context still reaches the peer (here: on the handshake ACK and
// the FIN, which have room).
TEST_F(Tcpint, DataChangedKeepsTheWholeMss) {
  auto b4 = hosts_->b.addr4;
  // The segment size the receiver saw (tcpi_rcv_mss: the largest segment,
  // gso_size for GSO packets) while a client streams 1 MiB to it.
  auto segment_size = [&]() -> int {
    auto srv = std::make_unique<lab::Child>(hosts_->b, [=](lab::Channel& ch) {
      int lfd = lab::tcp_listen(b4);
      ch.send(std::to_string(lab::local_port(lfd)));
      int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return 3;
      char buf[65536];
      while (::read(fd, buf, sizeof buf) > 0) {
      }
      tcp_info ti{};
      socklen_t len = sizeof ti;
      if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len)) return 5;
      ch.send(std::to_string(ti.tcpi_rcv_mss));
      return 0;
    });
    auto sport = static_cast<std::uint16_t>(std::stoi(srv->channel().recv()));
    auto cli = std::make_unique<lab::Child>(hosts_->a, [=](lab::Channel&) {
      int fd = lab::tcp_connect(b4, sport);
      std::vector<char> buf(1 << 20, 'x');
      if (!lab::send_all(fd, buf.data(), buf.size())) return 4;
      // Close once everything is acknowledged, so the FIN is a segment of
      // its own. A FIN that rides on a full data segment has no room for
      // the option under data_changed (docs/tcpint.md), and whether it
      // rides depends on how fast the peer reads: in a TCG guest it did.
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      for (int queued = 1; queued > 0;) {
        if (::ioctl(fd, SIOCOUTQ, &queued) != 0) return 6;
        if (std::chrono::steady_clock::now() > deadline) return 7;
        if (queued > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      ::close(fd);
      return 0;
    });
    EXPECT_EQ(cli->wait(), 0);
    int mss = std::stoi("0" + srv->channel().recv());
    EXPECT_EQ(srv->wait(), 0);
    return mss;
  };
  int without = segment_size();
  ASSERT_GT(without, 1000);
  load({{"host_a", hosts_->a.cgroup,
         "sender_id = 5\nsegments = [\"syn\", \"ack\", \"data_changed\", \"fin\"]"},
        {"host_b", hosts_->b.cgroup, "sender_id = 6"}});
  EXPECT_EQ(segment_size(), without) << "data_changed must not shrink segments";
  auto c = counters("host_a");
  EXPECT_GE(c["written"], 2u);  // SYN and handshake ACK at least
  EXPECT_EQ(c["helper_errors"], 0u);
  EXPECT_GE(counters("host_b")["parsed"], 2u);  // the handshake ACK and the FIN
  load({{"host_a", hosts_->a.cgroup, "sender_id = 5"},
        {"host_b", hosts_->b.cgroup, "sender_id = 6"}});
  // the kernel pads reserved option space to 4 bytes
  EXPECT_EQ(segment_size(), without - ((TCPINT_OPT_LEN + 3) & ~3))
      << "`data` reserves the option in every segment";
}

// data_changed without syscall hooks: nothing can change a flow's context
// after the handshake, so once the peer has it (A: handshake ACK; B: its
// first data segment) the socket stops asking for option callbacks and its
// data segments run no BPF at all; closing turns them back on, so both FINs
// still carry the option. bpf_stats counts the program's runs.
TEST_F(Tcpint, DataChangedWithoutHooksGoesQuietUntilFin) {
  const int msgs = 200;
  const std::string opts =
      "\nsyscall_hooks = false\nsegments = [\"syn\", \"ack\", \"data_changed\", \"fin\"]";
  int stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
  ASSERT_GE(stats_fd, 0) << "bpf_enable_stats: " << std::strerror(errno);
  load({{"host_a", hosts_->a.cgroup, "sender_id = 11" + opts},
        {"host_b", hosts_->b.cgroup, "sender_id = 22" + opts}});
  auto runs = [&](const std::string& inst) -> std::uint64_t {
    int fd = bpf_obj_get((pins_->path() + "/" + inst + "/progs/tcpint_sockops").c_str());
    bpf_prog_info info{};
    __u32 len = sizeof info;
    EXPECT_GE(fd, 0);
    EXPECT_EQ(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
    ::close(fd);
    return info.run_cnt;
  };
  auto srv = echo_server(hosts_->b, hosts_->b.addr4);
  auto sport = port_of(*srv);
  Capture cap(hosts_->a, sport);
  std::uint64_t a0 = runs("host_a"), b0 = runs("host_b");
  auto cli = client(hosts_->a, hosts_->b.addr4, sport, msgs);
  ASSERT_NE(sent_port(*cli), 0);
  // 200 echoed messages: 400 data segments between the two ends, and a
  // few dozen callbacks at most (handshake, first data, close).
  EXPECT_LT(runs("host_a") - a0, 40u);
  EXPECT_LT(runs("host_b") - b0, 40u);
  cli->channel().send("close");
  EXPECT_EQ(cli->wait(), 0);
  EXPECT_EQ(srv->channel().recv().rfind("done", 0), 0u);
  EXPECT_EQ(srv->wait(), 0);
  ::close(stats_fd);

  int a_syn = 0, a_ack = 0, a_data = 0, a_data_with = 0, a_fin = 0, b_data = 0,
      b_data_with = 0, b_fin = 0;
  bool first_pure_ack = true;
  for (const auto& seg : cap.segments(sport)) {
    auto o = find_option(seg, 254, 0x5449);
    if (seg.from_a) {
      if (seg.flags & kSyn) {
        a_syn += o ? 1 : 0;
      } else if (seg.flags & kFin) {
        a_fin += o ? 1 : 0;
      } else if (seg.payload > 0) {
        ++a_data;
        a_data_with += o ? 1 : 0;
      } else if (first_pure_ack) {
        first_pure_ack = false;
        a_ack += o ? 1 : 0;
      }
    } else if (seg.flags & kFin) {
      b_fin += o ? 1 : 0;
    } else if (seg.payload > 0) {
      ++b_data;
      if (o) {
        EXPECT_EQ(b_data, 1) << "only B's first data segment carries it";
      }
      b_data_with += o ? 1 : 0;
    }
  }
  EXPECT_EQ(a_syn, 1);
  EXPECT_EQ(a_ack, 1);
  EXPECT_GE(a_data, msgs / 2);
  EXPECT_EQ(a_data_with, 0);
  EXPECT_EQ(a_fin, 1) << "A's FIN without option";
  EXPECT_EQ(b_data_with, 1);
  EXPECT_EQ(b_fin, 1) << "B's FIN without option";
  EXPECT_EQ(counters("host_a")["helper_errors"], 0u);
  EXPECT_EQ(counters("host_b")["helper_errors"], 0u);
}

// The (pid, fd) -> socket -> tuple join for native IPv6 and for an IPv4
// flow seen through a dual-stack socket (v4-mapped) on both ends.
TEST_F(Tcpint, Ipv6AndV4MappedJoin) {
  load({{"host_a", hosts_->a.cgroup, "sender_id = 1"},
        {"host_b", hosts_->b.cgroup, "sender_id = 2"}});
  struct Case {
    std::string listen, connect;
    int family;
  } cases[] = {{hosts_->b.addr6, hosts_->b.addr6, AF_INET6},
               {"::", "::ffff:" + hosts_->b.addr4, AF_INET}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.connect);
    auto srv = echo_server(hosts_->b, c.listen);
    auto sport = port_of(*srv);
    auto cli = client(hosts_->a, c.connect, sport, 2);
    auto cport = sent_port(*cli);
    auto tx = flow("host_a", "flow_context_map", cport, sport);
    ASSERT_TRUE(tx);
    EXPECT_EQ(tx->at("key").at("family"), c.family);
    EXPECT_EQ(tx->at("value").at("msg_count"), 2);
    EXPECT_EQ(tx->at("value").at("pid"), cli->pid());
    auto rx = flow("host_b", "rx_context_map", sport, cport);
    ASSERT_TRUE(rx);
    EXPECT_EQ(rx->at("key").at("family"), c.family);
    EXPECT_EQ(rx->at("value").at("trace_id"), tx->at("value").at("trace_id"));
    EXPECT_EQ(rx->at("value").at("msg_count"), 2);
    // The server's replies were joined too (its tx context counted them).
    auto stx = flow("host_b", "flow_context_map", sport, cport);
    ASSERT_TRUE(stx);
    EXPECT_EQ(stx->at("value").at("msg_count"), 2);
    cli->channel().send("close");
    EXPECT_EQ(cli->wait(), 0);
    EXPECT_EQ(srv->wait(), 0);
  }
}

// One side without the plugin: connections work, the option is ignored.
TEST_F(Tcpint, PeerWithoutPlugin) {
  load({{"host_a", hosts_->a.cgroup, "sender_id = 1"}});
  {
    auto srv = echo_server(hosts_->b, hosts_->b.addr4);
    auto sport = port_of(*srv);
    Capture cap(hosts_->a, sport);
    auto cli = client(hosts_->a, hosts_->b.addr4, sport, 3);
    EXPECT_NE(sent_port(*cli), 0);
    cli->channel().send("close");
    EXPECT_EQ(cli->wait(), 0);
    EXPECT_EQ(srv->wait(), 0);
    int with = 0;
    for (const auto& s : cap.segments(sport))
      if (s.from_a && find_option(s, 254, TCPINT_DEFAULT_EXID)) ++with;
    EXPECT_GE(with, 5);  // the option went out and B's stack ignored it
  }
  // Reverse roles: client in B (no plugin) to a server in A (plugin).
  auto srv = echo_server(hosts_->a, hosts_->a.addr4);
  auto sport = port_of(*srv);
  auto cli = client(hosts_->b, hosts_->a.addr4, sport, 3);
  auto cport = sent_port(*cli);
  EXPECT_NE(cport, 0);
  EXPECT_FALSE(flow("host_a", "rx_context_map", sport, cport));
  cli->channel().send("close");
  EXPECT_EQ(cli->wait(), 0);
  EXPECT_EQ(srv->wait(), 0);
  auto c = counters("host_a");
  EXPECT_EQ(c["helper_errors"], 0u);
  EXPECT_EQ(c["rejected_magic"] + c["rejected_len"], 0u);
}

// Option space full on the SYN: TCP-MD5 (20 bytes) + MSS + SACK-permitted +
// window scaling leave 8 bytes, less than our 20 (on this kernel MD5 turns
// timestamps off, so later segments have room again). The connection works,
// the SYN goes out without our option and the no-room counter moves.
TEST_F(Tcpint, NoRoomWithMd5StillConnects) {
  load({{"host_a", hosts_->a.cgroup, "sender_id = 1"},
        {"host_b", hosts_->b.cgroup, "sender_id = 2"}});
  auto md5 = [](int fd, const std::string& peer) {
    tcp_md5sig sig{};
    auto* sin = reinterpret_cast<sockaddr_in*>(&sig.tcpm_addr);
    sin->sin_family = AF_INET;
    inet_pton(AF_INET, peer.c_str(), &sin->sin_addr);
    sig.tcpm_keylen = 8;
    std::memcpy(sig.tcpm_key, "tcpint!!", 8);
    return setsockopt(fd, IPPROTO_TCP, TCP_MD5SIG, &sig, sizeof(sig));
  };
  auto a4 = hosts_->a.addr4, b4 = hosts_->b.addr4;
  auto srv = std::make_unique<lab::Child>(hosts_->b, [=](lab::Channel& ch) {
    int lfd = lab::tcp_listen(b4);
    if (md5(lfd, a4)) return 2;
    ch.send(std::to_string(lab::local_port(lfd)));
    int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return 3;
    lab::echo_until_eof(fd);
    return 0;
  });
  auto sport = port_of(*srv);
  Capture cap(hosts_->a, sport);
  auto cli = std::make_unique<lab::Child>(hosts_->a, [=](lab::Channel& ch) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (md5(fd, b4)) return 2;
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(sport);
    inet_pton(AF_INET, b4.c_str(), &sin.sin_addr);
    if (connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof(sin))) return 3;
    const char m[] = "md5-message";
    char back[sizeof(m)];
    if (!lab::send_all(fd, m, sizeof(m)) || !lab::recv_exact(fd, back, sizeof(m)))
      return 4;
    ch.send("ok");
    ::close(fd);
    return 0;
  });
  EXPECT_EQ(cli->channel().recv(), "ok");
  EXPECT_EQ(cli->wait(), 0);
  EXPECT_EQ(srv->wait(), 0);
  auto segs = cap.segments(sport);
  bool syn_seen = false;
  for (const auto& s : segs) {
    EXPECT_TRUE(has_kind(s, 19)) << "MD5 option missing";
    if (s.from_a && (s.flags & kSyn)) {
      syn_seen = true;
      EXPECT_FALSE(find_option(s, 254, TCPINT_DEFAULT_EXID));
    }
  }
  EXPECT_TRUE(syn_seen);
  auto c = counters("host_a");
  EXPECT_GT(c["no_room"], 0u);
  EXPECT_EQ(c["helper_errors"], 0u);
}

// Syncookies on the passive side (tcp_syncookies=2: always): the SYN is not
// kept, so the receiver learns the context from the handshake ACK.
TEST_F(Tcpint, SyncookiesReceiverLearnsFromHandshakeAck) {
  hosts_->sysctl(hosts_->b, "net.ipv4.tcp_syncookies", "2");
  load({{"host_a", hosts_->a.cgroup, "sender_id = 1"},
        {"host_b", hosts_->b.cgroup, "sender_id = 2"}});
  auto srv = echo_server(hosts_->b, hosts_->b.addr4);
  auto sport = port_of(*srv);
  // No data: only the handshake can have carried the context.
  auto cli = client(hosts_->a, hosts_->b.addr4, sport, 0);
  auto cport = sent_port(*cli);
  std::this_thread::sleep_for(50ms);
  auto rx = flow("host_b", "rx_context_map", sport, cport);
  ASSERT_TRUE(rx) << dump("host_b", "rx_context_map").dump();
  auto tx = flow("host_a", "flow_context_map", cport, sport);
  ASSERT_TRUE(tx);
  EXPECT_EQ(rx->at("value").at("trace_id"), tx->at("value").at("trace_id"));
  EXPECT_EQ(rx->at("value").at("msg_count"), 0);
  cli->channel().send("close");
  EXPECT_EQ(cli->wait(), 0);
  EXPECT_EQ(srv->wait(), 0);
}

// Fast open: the first connection asks for a cookie, the second sends data
// in the SYN. MSS + SACK + timestamps + window scaling + the TFO option
// leave less than 20 bytes: both SYNs go out without our option (no room),
// the exchange is intact, and the receiver still gets the context from the
// later segments (the fast-open child answers with the option on its
// SYN-ACK already).
TEST_F(Tcpint, FastOpen) {
  hosts_->sysctl(hosts_->a, "net.ipv4.tcp_fastopen", "3");
  hosts_->sysctl(hosts_->b, "net.ipv4.tcp_fastopen", "3");
  load({{"host_a", hosts_->a.cgroup, "sender_id = 1"},
        {"host_b", hosts_->b.cgroup, "sender_id = 2"}});
  auto srv = echo_server(hosts_->b, hosts_->b.addr4, /*fastopen=*/true, 2);
  auto sport = port_of(*srv);
  Capture cap(hosts_->a, sport);
  auto b4 = hosts_->b.addr4;
  auto cli = std::make_unique<lab::Child>(hosts_->a, [=](lab::Channel& ch) {
    for (int i = 0; i < 2; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in sin{};
      sin.sin_family = AF_INET;
      sin.sin_port = htons(sport);
      inet_pton(AF_INET, b4.c_str(), &sin.sin_addr);
      const char m[] = "fastopen-data";
      if (sendto(fd, m, sizeof(m), MSG_FASTOPEN,
                 reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) < 0)
        return 2;
      char back[sizeof(m)];
      if (!lab::recv_exact(fd, back, sizeof(m)) ||
          std::memcmp(back, m, sizeof(m)))
        return 3;
      // A second message on the established flow.
      if (!lab::send_all(fd, m, sizeof(m)) ||
          !lab::recv_exact(fd, back, sizeof(m)))
        return 4;
      ch.send("port " + std::to_string(lab::local_port(fd)));
      std::this_thread::sleep_for(20ms);
      ::close(fd);
    }
    return 0;
  });
  auto p1 = cli->channel().recv();
  auto p2 = cli->channel().recv();
  EXPECT_EQ(cli->wait(), 0);
  EXPECT_EQ(srv->wait(), 0);
  ASSERT_EQ(p2.rfind("port ", 0), 0u);
  auto cport2 = static_cast<std::uint16_t>(std::stoi(p2.substr(5)));
  auto rx = flow("host_b", "rx_context_map", sport, cport2);
  ASSERT_TRUE(rx) << dump("host_b", "rx_context_map").dump();
  auto tx = flow("host_a", "flow_context_map", cport2, sport);
  ASSERT_TRUE(tx);
  EXPECT_EQ(rx->at("value").at("trace_id"), tx->at("value").at("trace_id"));
  EXPECT_GE(rx->at("value").at("msg_count"), 1);
  bool syn_with_data = false;
  for (const auto& s : cap.segments(sport)) {
    if (s.from_a && (s.flags & kSyn)) {
      EXPECT_TRUE(has_kind(s, 34)) << "no TFO option on the SYN";
      EXPECT_FALSE(find_option(s, 254, TCPINT_DEFAULT_EXID));
      if (s.payload > 0 && s.sport == cport2) syn_with_data = true;
    }
  }
  EXPECT_TRUE(syn_with_data) << "fast open did not put data in the SYN";
  auto c = counters("host_a");
  EXPECT_GE(c["no_room"], 2u);
  EXPECT_EQ(c["helper_errors"], 0u);
}

// Helper return codes and foreign options: a second instance on A with the
// same kind + ExID finds its option already written (bpf_store_hdr_opt
// -EEXIST, recorded in helper_errors; timestamps off on A so that data
// segments have room for both reservations, else the second gets -ENOSPC,
// counted as no room); an instance on B with another ExID counts A's
// options as rejected (bad magic) and stores nothing.
TEST_F(Tcpint, HelperCodesAndForeignMagic) {
  hosts_->sysctl(hosts_->a, "net.ipv4.tcp_timestamps", "0");
  load({{"a_first", hosts_->a.cgroup, "sender_id = 1"},
        {"a_second", hosts_->a.cgroup, "sender_id = 3"},
        {"b_other", hosts_->b.cgroup, "sender_id = 2\nexid = 0x1234"}});
  auto srv = echo_server(hosts_->b, hosts_->b.addr4);
  auto sport = port_of(*srv);
  auto cli = client(hosts_->a, hosts_->b.addr4, sport, 2);
  auto cport = sent_port(*cli);
  cli->channel().send("close");
  EXPECT_EQ(cli->wait(), 0);
  EXPECT_EQ(srv->wait(), 0);
  // Exactly one of the two writers stored each option; the other got EEXIST.
  std::uint64_t eexist = 0;
  for (const char* inst : {"a_first", "a_second"})
    for (const auto& e : dump(inst, "helper_errors")) {
      const auto& k = e.at("formatted").at("key");
      EXPECT_EQ(k.at("helper"), TCPINT_H_STORE);
      EXPECT_EQ(k.at("err"), EEXIST);
      eexist += e.at("formatted").at("value").get<std::uint64_t>();
    }
  auto w1 = counters("a_first")["written"], w2 = counters("a_second")["written"];
  EXPECT_GE(w1 + w2, 5u);
  EXPECT_GT(eexist, 0u);
  EXPECT_LE(eexist, w1 + w2);  // at most one EEXIST per written option
  auto cb = counters("b_other");
  EXPECT_GT(cb["rejected_magic"], 0u);
  EXPECT_EQ(cb["parsed"], 0u);
  EXPECT_FALSE(flow("b_other", "rx_context_map", sport, cport));
}

// Flow selection: a port filter that does not match leaves the flow alone
// (no callbacks enabled, nothing on the wire, no context).
TEST_F(Tcpint, PortFilterExcludesFlow) {
  load({{"host_a", hosts_->a.cgroup, "ports = [1]"}});
  auto srv = echo_server(hosts_->b, hosts_->b.addr4);
  auto sport = port_of(*srv);
  Capture cap(hosts_->a, sport);
  auto cli = client(hosts_->a, hosts_->b.addr4, sport, 2);
  auto cport = sent_port(*cli);
  EXPECT_FALSE(flow("host_a", "flow_context_map", cport, sport));
  cli->channel().send("close");
  EXPECT_EQ(cli->wait(), 0);
  EXPECT_EQ(srv->wait(), 0);
  for (const auto& s : cap.segments(sport))
    EXPECT_FALSE(find_option(s, 254, TCPINT_DEFAULT_EXID));
  EXPECT_EQ(counters("host_a")["written"], 0u);
}

}  // namespace

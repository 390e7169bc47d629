// The load suite: rolling deploys under load with Switchover next to two baselines (naive stop-then-start, SO_REUSEPORT
// overlap), the redirect's steady-state overhead, and handoff timing (with 10,000 idle connections too). Runs in
// network namespaces it creates and deletes; writes load/results/<timestamp>/report.md and chart SVGs; exits non-zero
// when Switchover showed any failure. Linux, root.
using Switchover.Load.Suite;

return await SuiteCommand.RunAsync(args);

using Switchover.Cli;

return await SwitchoverCli.RunAsync(args).ConfigureAwait(false);

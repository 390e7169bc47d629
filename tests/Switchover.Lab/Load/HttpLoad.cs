namespace Switchover.Lab;

/// <summary>
/// Drives HTTP/1.1 GET load (or raw TCP request/response load, see <see cref="LoadProtocol.RawTcp"/>) at one or more
/// targets over raw sockets and classifies every outcome. Unlike HttpClient it never retries: a request that fails on a
/// stale connection is counted as the failure it was.
/// </summary>
public static class HttpLoad
{
    /// <summary>Starts a run in the background; stop it with <see cref="LoadRun.StopAsync"/> or wait for <see cref="LoadRun.Completion"/>.</summary>
    /// <param name="cancellationToken">Aborts the run: requests in flight are abandoned, and the result is still produced.</param>
    /// <exception cref="ArgumentException">No targets, duplicate target names, or invalid options (all problems listed).</exception>
    public static LoadRun Start(IReadOnlyList<LoadTarget> targets, LoadOptions options, CancellationToken cancellationToken = default) =>
        LoadRun.Start(targets, options, cancellationToken);

    /// <summary>Runs until <see cref="LoadOptions.MaxDuration"/> or <see cref="LoadOptions.MaxRequests"/> and returns the result.</summary>
    /// <param name="cancellationToken">Ends the run early, abandoning requests in flight; the partial result is returned, not an exception.</param>
    public static Task<LoadResult> RunAsync(IReadOnlyList<LoadTarget> targets, LoadOptions options, CancellationToken cancellationToken) =>
        Start(targets, options, cancellationToken).Completion;
}

namespace Switchover.Migration.Gre;

/// <summary>A tunnel could not be created or failed while running. Carries the errno when a system call failed.</summary>
public sealed class TunnelException : Exception
{
    public TunnelException()
    {
    }

    public TunnelException(string message)
        : base(message)
    {
    }

    public TunnelException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public TunnelException(string message, int errno, Exception? innerException = null)
        : base(message, innerException) => Errno = errno;

    /// <summary>The errno of the failed system call, when one failed.</summary>
    public int? Errno { get; }
}

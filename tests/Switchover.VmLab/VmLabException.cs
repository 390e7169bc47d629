namespace Switchover.VmLab;

/// <summary>The VM lab could not do what was asked: a missing prerequisite, a VM that did not boot or does not answer.</summary>
public class VmLabException : Exception
{
    public VmLabException()
    {
    }

    public VmLabException(string message)
        : base(message)
    {
    }

    public VmLabException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

namespace Switchover.Lab;

/// <summary>Linux signal numbers for <see cref="LabProcess.SendSignal"/>.</summary>
public static class Signals
{
    public const int Hangup = 1;
    public const int Interrupt = 2;
    public const int Quit = 3;
    public const int Kill = 9;
    public const int User1 = 10;
    public const int User2 = 12;
    public const int Terminate = 15;
    public const int Continue = 18;
    public const int Stop = 19;
}

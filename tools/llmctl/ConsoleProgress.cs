namespace LlmCtl;

/// <summary>
/// Progress for long commands on stderr: a line redrawn in place on a terminal; when stderr is a
/// file or pipe, at most one line per tenth of the work so logs stay readable.
/// </summary>
internal sealed class ConsoleProgress(string what, int total)
{
    private int _lastTenth = -1;

    public void Report(int done)
    {
        if (!Console.IsErrorRedirected)
        {
            Console.Error.Write($"\r{what} {done}/{total}");
            if (done >= total) Console.Error.WriteLine();
            return;
        }
        int tenth = total > 0 ? (int)(10L * done / total) : 10;
        if (tenth == _lastTenth) return;
        _lastTenth = tenth;
        Console.Error.WriteLine($"{what} {done}/{total}");
    }
}

using System.Globalization;
using System.Text;

namespace Cluster.Engine.Chat;

/// <summary>Jinja's Undefined: a missing variable, key or attribute. Falsy, prints as "", iterates as empty.</summary>
internal sealed class Undefined
{
    public static readonly Undefined Instance = new();
    private Undefined() { }
}

/// <summary>
/// Renders a parsed template. Values are string, long, bool, null (Python None), <see cref="Undefined"/>,
/// List&lt;object?&gt; and Dictionary&lt;string, object?&gt;; semantics follow Python/Jinja for these types,
/// and anything outside the subset throws <see cref="ChatTemplateException"/> instead of guessing.
/// </summary>
internal sealed class TemplateEvaluator
{
    private readonly StringBuilder _out = new();
    // Innermost scope last. A for-loop body gets its own scope, so a 'set' inside it does not leak out (Jinja scoping).
    private readonly List<Dictionary<string, object?>> _scopes;

    private TemplateEvaluator(Dictionary<string, object?> globals) => _scopes = [globals];

    public static string Render(List<Node> nodes, Dictionary<string, object?> globals)
    {
        var evaluator = new TemplateEvaluator(globals);
        evaluator.Execute(nodes);
        return evaluator._out.ToString();
    }

    private void Execute(List<Node> nodes)
    {
        foreach (var node in nodes)
        {
            switch (node)
            {
                case TextNode t: _out.Append(t.Text); break;
                case OutputNode o: _out.Append(ToText(Eval(o.Value), o.Line)); break;
                case SetNode s: _scopes[^1][s.Name] = Eval(s.Value); break;
                case IfNode i:
                    var branch = i.Branches.FirstOrDefault(b => IsTrue(Eval(b.Condition))).Body ?? i.Else;
                    if (branch != null) Execute(branch);
                    break;
                case ForNode f: ExecuteFor(f); break;
            }
        }
    }

    private void ExecuteFor(ForNode f)
    {
        var items = Eval(f.Iterable) switch
        {
            Undefined => [],
            List<object?> list => list,
            string s => s.Select(c => (object?)c.ToString()).ToList(),
            Dictionary<string, object?> d => d.Keys.Select(k => (object?)k).ToList(),
            var other => throw new ChatTemplateException($"cannot iterate over {TypeName(other)} at line {f.Line}"),
        };
        var scope = new Dictionary<string, object?>();
        _scopes.Add(scope);
        for (int i = 0; i < items.Count; i++)
        {
            scope[f.Variable] = items[i];
            scope["loop"] = new Dictionary<string, object?>
            {
                ["index0"] = (long)i, ["index"] = (long)(i + 1), ["first"] = i == 0, ["last"] = i == items.Count - 1,
                ["length"] = (long)items.Count,
            };
            Execute(f.Body);
        }
        _scopes.RemoveAt(_scopes.Count - 1);
    }

    private object? Lookup(string name)
    {
        for (int i = _scopes.Count - 1; i >= 0; i--)
            if (_scopes[i].TryGetValue(name, out var v)) return v;
        return Undefined.Instance;
    }

    private object? Eval(Expr e) => e switch
    {
        LiteralExpr l => l.Value,
        NameExpr n => Lookup(n.Name),
        ListExpr l => l.Items.Select(Eval).ToList(),
        AttrExpr a => GetItem(Eval(a.Target), a.Name, a.Line),
        ItemExpr i => GetItem(Eval(i.Target), Eval(i.Key), i.Line),
        SliceExpr s => Slice(Eval(s.Target), s.Start == null ? null : Eval(s.Start), s.Stop == null ? null : Eval(s.Stop), s.Line),
        CallExpr c => Call(c),
        FilterExpr f => Filter(f),
        TestExpr t => Test(t) != t.Negated,
        UnaryExpr { Op: "not" } u => !IsTrue(Eval(u.Operand)),
        UnaryExpr u => -AsLong(Eval(u.Operand), "-", u.Line),
        BinaryExpr { Op: "and" } b => IsTrue(Eval(b.Left)) ? Eval(b.Right) : Eval(b.Left),
        BinaryExpr { Op: "or" } b => Eval(b.Left) is var left && IsTrue(left) ? left : Eval(b.Right),
        BinaryExpr b => Binary(b.Op, Eval(b.Left), Eval(b.Right), b.Line),
        ConditionalExpr c => IsTrue(Eval(c.Condition)) ? Eval(c.Then) : c.Else == null ? Undefined.Instance : Eval(c.Else),
        _ => throw new ChatTemplateException($"unsupported expression at line {e.Line}"),
    };

    private static object? GetItem(object? target, object? key, int line)
    {
        switch (target)
        {
            case Dictionary<string, object?> d when key is string k:
                return d.TryGetValue(k, out var v) ? v : Undefined.Instance;
            case List<object?> list when key is long i:
                if (i < 0) i += list.Count;
                return i >= 0 && i < list.Count ? list[(int)i] : Undefined.Instance;
            case string s when key is long i:
                if (i < 0) i += s.Length;
                return i >= 0 && i < s.Length ? s[(int)i].ToString() : Undefined.Instance;
            case Undefined:
                throw new ChatTemplateException($"undefined value has no attribute or item '{key}' at line {line}");
            default:
                // A string's methods (message.content.strip) are reached through CallExpr, not here.
                return Undefined.Instance;
        }
    }

    private static object? Slice(object? target, object? start, object? stop, int line)
    {
        int count = target switch { List<object?> l => l.Count, string s => s.Length, _ => -1 };
        if (count < 0) throw new ChatTemplateException($"cannot slice {TypeName(target)} at line {line}");
        // Python slice bounds: negative counts from the end, out of range clamps.
        int Bound(object? v, int fallback) => v == null ? fallback : (int)Math.Clamp(AsLong(v, "slice", line) is var b && b < 0 ? b + count : b, 0, count);
        int from = Bound(start, 0), to = Math.Max(from, Bound(stop, count));
        return target is string str ? str[from..to] : ((List<object?>)target!).GetRange(from, to - from);
    }

    private object? Call(CallExpr c)
    {
        var args = c.Args.Select(Eval).ToList();
        if (c.Callee is NameExpr { Name: "raise_exception" })
            throw new ChatTemplateException($"the chat template raised an error: {(args.Count > 0 ? ToText(args[0], c.Line) : "")}");
        if (c.Callee is AttrExpr a && Eval(a.Target) is string s)
        {
            string Arg(int i) => args.Count > i && args[i] is string v ? v : throw new ChatTemplateException($"'{a.Name}' expects a string argument at line {c.Line}");
            return a.Name switch
            {
                "strip" when args.Count == 0 => s.Trim(),
                "lstrip" when args.Count == 0 => s.TrimStart(),
                "rstrip" when args.Count == 0 => s.TrimEnd(),
                "upper" => s.ToUpperInvariant(),
                "lower" => s.ToLowerInvariant(),
                "startswith" => s.StartsWith(Arg(0), StringComparison.Ordinal),
                "endswith" => s.EndsWith(Arg(0), StringComparison.Ordinal),
                _ => throw new ChatTemplateException($"unsupported method '{a.Name}' at line {c.Line}"),
            };
        }
        var name = c.Callee switch { NameExpr n => n.Name, AttrExpr at => at.Name, _ => "(expression)" };
        throw new ChatTemplateException($"unsupported function '{name}' at line {c.Line}");
    }

    private object? Filter(FilterExpr f)
    {
        var value = Eval(f.Value);
        return f.Name switch
        {
            "trim" => ToText(value, f.Line).Trim(),
            "length" or "count" => value switch
            {
                string s => (long)s.Length,
                List<object?> l => (long)l.Count,
                Dictionary<string, object?> d => (long)d.Count,
                _ => throw new ChatTemplateException($"'length' of {TypeName(value)} at line {f.Line}"),
            },
            _ => throw new ChatTemplateException($"unsupported filter '{f.Name}' at line {f.Line}"),
        };
    }

    private bool Test(TestExpr t)
    {
        var value = Eval(t.Value);
        return t.Name switch
        {
            "defined" => value is not Undefined,
            "undefined" => value is Undefined,
            "none" => value is null,
            "string" => value is string,
            _ => throw new ChatTemplateException($"unsupported test '{t.Name}' at line {t.Line}"),
        };
    }

    private static object? Binary(string op, object? l, object? r, int line)
    {
        switch (op)
        {
            case "==": return ValueEquals(l, r);
            case "!=": return !ValueEquals(l, r);
            case "~": return ToText(l, line) + ToText(r, line);
            case "in":
                return r switch
                {
                    string s when l is string sub => s.Contains(sub, StringComparison.Ordinal),
                    List<object?> list => list.Any(x => ValueEquals(x, l)),
                    Dictionary<string, object?> d => l is string k && d.ContainsKey(k),
                    _ => throw new ChatTemplateException($"'in' on {TypeName(r)} at line {line}"),
                };
            case "+" when l is string a && r is string b: return a + b;
            case "+" when l is List<object?> a && r is List<object?> b: return a.Concat(b).ToList();
            case "<" or ">" or "<=" or ">=" when l is string a && r is string b:
                return Compare(op, string.CompareOrdinal(a, b));
        }
        long x = AsLong(l, op, line), y = AsLong(r, op, line);
        return op switch
        {
            "+" => x + y,
            "-" => x - y,
            "*" => x * y,
            // Python's floor division and modulo take the sign of the divisor.
            "//" when y != 0 => (long)Math.Floor((double)x / y),
            "%" when y != 0 => ((x % y) + y) % y,
            "<" or ">" or "<=" or ">=" => Compare(op, x.CompareTo(y)),
            _ => throw new ChatTemplateException($"unsupported operator '{op}' on {TypeName(l)} and {TypeName(r)} at line {line}"),
        };
    }

    private static bool Compare(string op, int c) => op switch { "<" => c < 0, ">" => c > 0, "<=" => c <= 0, _ => c >= 0 };

    // Python equality: True == 1, different types otherwise unequal; Jinja's Undefined equals Undefined.
    private static bool ValueEquals(object? a, object? b)
    {
        if (a is bool ba && b is long) a = ba ? 1L : 0L;
        if (b is bool bb && a is long) b = bb ? 1L : 0L;
        return a switch
        {
            null => b is null,
            List<object?> la => b is List<object?> lb && la.Count == lb.Count && la.Zip(lb).All(p => ValueEquals(p.First, p.Second)),
            _ => Equals(a, b),
        };
    }

    private static long AsLong(object? v, string op, int line) => v switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        _ => throw new ChatTemplateException($"unsupported operator '{op}' on {TypeName(v)} at line {line}"),
    };

    public static bool IsTrue(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        string s => s.Length > 0,
        List<object?> l => l.Count > 0,
        Dictionary<string, object?> d => d.Count > 0,
        _ => true,
    };

    // How Jinja prints a value ({{ x }} and ~): Python's str(); containers have no faithful rendering here.
    private static string ToText(object? v, int line) => v switch
    {
        string s => s,
        Undefined => "",
        null => "None",
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        _ => throw new ChatTemplateException($"unsupported printing of {TypeName(v)} at line {line}"),
    };

    private static string TypeName(object? v) => v switch
    {
        null => "none",
        Undefined => "an undefined value",
        string => "a string",
        long => "an integer",
        bool => "a boolean",
        List<object?> => "a list",
        Dictionary<string, object?> => "a mapping",
        _ => v.GetType().Name,
    };
}

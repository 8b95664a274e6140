using System.Text;

namespace Cluster.Engine.Chat;

/// <summary>Thrown when a chat template cannot be parsed or rendered; the message names the construct and line.</summary>
public sealed class ChatTemplateException(string message) : Exception(message);

// The syntax tree of the Jinja subset. Every node keeps its source line for error messages.
internal abstract record Node(int Line);
internal sealed record TextNode(string Text) : Node(0);
internal sealed record OutputNode(Expr Value, int L) : Node(L);
internal sealed record IfNode(List<(Expr Condition, List<Node> Body)> Branches, List<Node>? Else, int L) : Node(L);
internal sealed record ForNode(string Variable, Expr Iterable, List<Node> Body, int L) : Node(L);
internal sealed record SetNode(string Name, Expr Value, int L) : Node(L);

internal abstract record Expr(int Line);
internal sealed record LiteralExpr(object? Value, int L) : Expr(L);
internal sealed record NameExpr(string Name, int L) : Expr(L);
internal sealed record AttrExpr(Expr Target, string Name, int L) : Expr(L);
internal sealed record ItemExpr(Expr Target, Expr Key, int L) : Expr(L);
internal sealed record SliceExpr(Expr Target, Expr? Start, Expr? Stop, int L) : Expr(L);
internal sealed record CallExpr(Expr Callee, List<Expr> Args, int L) : Expr(L);
internal sealed record FilterExpr(Expr Value, string Name, List<Expr> Args, int L) : Expr(L);
internal sealed record TestExpr(Expr Value, string Name, bool Negated, int L) : Expr(L);
internal sealed record UnaryExpr(string Op, Expr Operand, int L) : Expr(L);
internal sealed record BinaryExpr(string Op, Expr Left, Expr Right, int L) : Expr(L);
internal sealed record ListExpr(List<Expr> Items, int L) : Expr(L);
internal sealed record ConditionalExpr(Expr Then, Expr Condition, Expr? Else, int L) : Expr(L);

/// <summary>
/// Lexer and recursive-descent parser for the Jinja subset chat templates use. Whitespace follows
/// Hugging Face's environment (trim_blocks and lstrip_blocks on) plus explicit <c>{%- -%}</c> control,
/// as described in the Jinja "Whitespace Control" documentation.
/// </summary>
internal sealed class TemplateParser
{
    private enum Kind { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Integer, Op, Eof }
    private readonly record struct Token(Kind Kind, string Value, int Line);

    private readonly List<Token> _tokens;
    private int _pos;

    private TemplateParser(List<Token> tokens) => _tokens = tokens;

    public static List<Node> Parse(string source)
    {
        var parser = new TemplateParser(Lex(source));
        var nodes = parser.ParseBody(out var end);
        if (end != null) throw parser.Error($"unexpected tag '{end}'");
        return nodes;
    }

    // ---- lexer ----

    private static List<Token> Lex(string src)
    {
        var tokens = new List<Token>();
        int pos = 0;
        bool stripLeading = false, trimNewline = false;
        int LineAt(int index) { int n = 1; for (int i = 0; i < index && i < src.Length; i++) if (src[i] == '\n') n++; return n; }
        while (true)
        {
            int tag = NextTag(src, pos);
            int textStart = pos;
            string text = src[pos..(tag < 0 ? src.Length : tag)];
            if (stripLeading) { int before = text.Length; text = text.TrimStart(); textStart += before - text.Length; }
            else if (trimNewline && text.StartsWith('\n')) { text = text[1..]; textStart++; }
            else if (trimNewline && text.StartsWith("\r\n")) { text = text[2..]; textStart += 2; }
            if (tag < 0) { if (text.Length > 0) tokens.Add(new(Kind.Text, text, 0)); break; }

            char kind = src[tag + 1];
            int p = tag + 2;
            bool minus = p < src.Length && src[p] == '-', plus = p < src.Length && src[p] == '+';
            if (minus || plus) p++;
            if (minus) text = text.TrimEnd();
            else if (kind != '{' && !plus)
            {
                // lstrip_blocks: spaces and tabs from the start of a line up to a block or comment tag go.
                int k = text.Length;
                while (k > 0 && (text[k - 1] == ' ' || text[k - 1] == '\t')) k--;
                bool lineStart = k > 0 ? text[k - 1] == '\n' : textStart == 0 || src[textStart - 1] == '\n';
                if (lineStart) text = text[..k];
            }
            if (text.Length > 0) tokens.Add(new(Kind.Text, text, 0));

            int line = LineAt(tag);
            if (kind == '#')
            {
                int close = src.IndexOf("#}", p, StringComparison.Ordinal);
                if (close < 0) throw new ChatTemplateException($"unclosed comment at line {line}");
                stripLeading = src[close - 1] == '-';
                trimNewline = !stripLeading;
                pos = close + 2;
                continue;
            }
            tokens.Add(new(kind == '{' ? Kind.VarBegin : Kind.BlockBegin, "", line));
            string closer = kind == '{' ? "}}" : "%}";
            pos = LexTag(src, p, closer, line, tokens, out bool minusClose);
            tokens.Add(new(kind == '{' ? Kind.VarEnd : Kind.BlockEnd, "", LineAt(pos)));
            stripLeading = minusClose;
            trimNewline = kind == '%' && !minusClose;
        }
        tokens.Add(new(Kind.Eof, "", LineAt(src.Length)));
        return tokens;
    }

    private static int NextTag(string src, int from)
    {
        for (int i = from; i < src.Length - 1; i++)
            if (src[i] == '{' && src[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    private static readonly string[] Operators = ["==", "!=", "<=", ">=", "//", "<", ">", "+", "-", "*", "/", "%", "~", "(", ")", "[", "]", ".", ",", "|", "=", ":"];

    /// <summary>Tokens of one tag's inside; returns the index just past the closing delimiter.</summary>
    private static int LexTag(string src, int p, string closer, int line, List<Token> tokens, out bool minusClose)
    {
        while (true)
        {
            while (p < src.Length && char.IsWhiteSpace(src[p])) { if (src[p] == '\n') line++; p++; }
            if (p >= src.Length) throw new ChatTemplateException($"unclosed tag at line {line}");
            if (string.CompareOrdinal(src, p, "-" + closer, 0, 3) == 0) { minusClose = true; return p + 3; }
            if (string.CompareOrdinal(src, p, closer, 0, 2) == 0) { minusClose = false; return p + 2; }
            char c = src[p];
            if (char.IsLetter(c) || c == '_')
            {
                int s = p;
                while (p < src.Length && (char.IsLetterOrDigit(src[p]) || src[p] == '_')) p++;
                tokens.Add(new(Kind.Name, src[s..p], line));
            }
            else if (char.IsDigit(c))
            {
                int s = p;
                while (p < src.Length && char.IsDigit(src[p])) p++;
                if (p < src.Length && src[p] == '.' && p + 1 < src.Length && char.IsDigit(src[p + 1]))
                    throw new ChatTemplateException($"unsupported float literal at line {line}");
                tokens.Add(new(Kind.Integer, src[s..p], line));
            }
            else if (c is '\'' or '"')
            {
                int s = p;
                p = LexString(src, p, line, out var value);
                tokens.Add(new(Kind.String, value, line));
                line += src.AsSpan(s, p - s).Count('\n'); // a literal may span lines
            }
            else
            {
                var op = Operators.FirstOrDefault(o => string.CompareOrdinal(src, p, o, 0, o.Length) == 0)
                    ?? throw new ChatTemplateException($"unexpected character '{c}' at line {line}");
                tokens.Add(new(Kind.Op, op, line));
                p += op.Length;
            }
        }
    }

    // Python string escapes; an unknown escape keeps its backslash, as Python does.
    private static int LexString(string src, int p, int line, out string value)
    {
        char quote = src[p++];
        var sb = new StringBuilder();
        while (p < src.Length && src[p] != quote)
        {
            if (src[p] == '\\' && p + 1 < src.Length)
            {
                char e = src[p + 1];
                sb.Append(e switch { 'n' => "\n", 't' => "\t", 'r' => "\r", '\\' => "\\", '\'' => "'", '"' => "\"", _ => "\\" + e });
                p += 2;
            }
            else sb.Append(src[p++]);
        }
        if (p >= src.Length) throw new ChatTemplateException($"unterminated string at line {line}");
        value = sb.ToString();
        return p + 1;
    }

    // ---- statements ----

    private Token Peek => _tokens[_pos];
    private Token Next() => _tokens[_pos++];
    private ChatTemplateException Error(string what) => new($"{what} at line {Peek.Line}");
    private bool IsOp(string op) => Peek.Kind == Kind.Op && Peek.Value == op;
    private bool IsName(string name) => Peek.Kind == Kind.Name && Peek.Value == name;

    private void Expect(Kind kind, string? value = null)
    {
        if (Peek.Kind != kind || (value != null && Peek.Value != value))
            throw Error($"expected {value ?? kind.ToString()} but found '{Peek.Value}'");
        _pos++;
    }

    private string ExpectName()
    {
        if (Peek.Kind != Kind.Name) throw Error($"expected a name but found '{Peek.Value}'");
        return Next().Value;
    }

    /// <summary>Parses until end of input or a closing tag (elif/else/endif/endfor), whose name goes to <paramref name="end"/>.</summary>
    private List<Node> ParseBody(out string? end)
    {
        var nodes = new List<Node>();
        while (true)
        {
            var t = Next();
            switch (t.Kind)
            {
                case Kind.Eof: _pos--; end = null; return nodes;
                case Kind.Text: nodes.Add(new TextNode(t.Value)); break;
                case Kind.VarBegin:
                    nodes.Add(new OutputNode(ParseExpression(), t.Line));
                    Expect(Kind.VarEnd);
                    break;
                case Kind.BlockBegin:
                    var name = ExpectName();
                    switch (name)
                    {
                        case "if": nodes.Add(ParseIf(t.Line)); break;
                        case "for": nodes.Add(ParseFor(t.Line)); break;
                        case "set": nodes.Add(ParseSet(t.Line)); break;
                        case "elif" or "else" or "endif" or "endfor": end = name; return nodes;
                        default: throw new ChatTemplateException($"unsupported tag '{name}' at line {t.Line}");
                    }
                    break;
                default: throw new ChatTemplateException($"unexpected '{t.Value}' at line {t.Line}");
            }
        }
    }

    private IfNode ParseIf(int line)
    {
        var branches = new List<(Expr, List<Node>)>();
        List<Node>? otherwise = null;
        var condition = ParseExpression();
        while (true)
        {
            Expect(Kind.BlockEnd);
            var body = ParseBody(out var end);
            branches.Add((condition, body));
            if (end == "elif") { condition = ParseExpression(); continue; }
            if (end == "else")
            {
                Expect(Kind.BlockEnd);
                otherwise = ParseBody(out end);
            }
            if (end != "endif") throw new ChatTemplateException($"'if' at line {line} is not closed by 'endif'");
            Expect(Kind.BlockEnd);
            return new IfNode(branches, otherwise, line);
        }
    }

    private ForNode ParseFor(int line)
    {
        var variable = ExpectName();
        if (IsOp(",")) throw Error("unsupported tuple unpacking in 'for'");
        Expect(Kind.Name, "in");
        var iterable = ParseOr(); // not ParseExpression: "for x in y if cond" is a loop filter, not an inline if
        if (IsName("if") || IsName("recursive")) throw Error($"unsupported '{Peek.Value}' in 'for'");
        Expect(Kind.BlockEnd);
        var body = ParseBody(out var end);
        if (end == "else") throw new ChatTemplateException($"unsupported 'for ... else' at line {line}");
        if (end != "endfor") throw new ChatTemplateException($"'for' at line {line} is not closed by 'endfor'");
        Expect(Kind.BlockEnd);
        return new ForNode(variable, iterable, body, line);
    }

    private SetNode ParseSet(int line)
    {
        var name = ExpectName();
        if (IsOp(".")) throw Error("unsupported attribute assignment in 'set'");
        if (!IsOp("=")) throw Error("unsupported block 'set'");
        _pos++;
        var value = ParseExpression();
        Expect(Kind.BlockEnd);
        return new SetNode(name, value, line);
    }

    // ---- expressions, lowest precedence first (Jinja's own order) ----

    private Expr ParseExpression()
    {
        var e = ParseOr();
        if (!IsName("if")) return e;
        int line = Next().Line;
        var condition = ParseOr();
        Expr? otherwise = null;
        if (IsName("else")) { _pos++; otherwise = ParseExpression(); }
        return new ConditionalExpr(e, condition, otherwise, line);
    }

    private Expr ParseOr()
    {
        var e = ParseAnd();
        while (IsName("or")) { int l = Next().Line; e = new BinaryExpr("or", e, ParseAnd(), l); }
        return e;
    }

    private Expr ParseAnd()
    {
        var e = ParseNot();
        while (IsName("and")) { int l = Next().Line; e = new BinaryExpr("and", e, ParseNot(), l); }
        return e;
    }

    private Expr ParseNot()
    {
        if (!IsName("not")) return ParseCompare();
        int l = Next().Line;
        return new UnaryExpr("not", ParseNot(), l);
    }

    private Expr ParseCompare()
    {
        var e = ParseConcat();
        while (true)
        {
            int l = Peek.Line;
            if (Peek.Kind == Kind.Op && Peek.Value is "==" or "!=" or "<" or ">" or "<=" or ">=")
                e = new BinaryExpr(Next().Value, e, ParseConcat(), l);
            else if (IsName("in")) { _pos++; e = new BinaryExpr("in", e, ParseConcat(), l); }
            else if (IsName("not") && _tokens[_pos + 1] is { Kind: Kind.Name, Value: "in" })
            {
                _pos += 2;
                e = new UnaryExpr("not", new BinaryExpr("in", e, ParseConcat(), l), l);
            }
            else return e;
        }
    }

    private Expr ParseConcat()
    {
        var e = ParseAdd();
        while (IsOp("~")) { int l = Next().Line; e = new BinaryExpr("~", e, ParseAdd(), l); }
        return e;
    }

    private Expr ParseAdd()
    {
        var e = ParseMul();
        while (IsOp("+") || IsOp("-")) { var t = Next(); e = new BinaryExpr(t.Value, e, ParseMul(), t.Line); }
        return e;
    }

    private Expr ParseMul()
    {
        var e = ParseUnary();
        while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) { var t = Next(); e = new BinaryExpr(t.Value, e, ParseUnary(), t.Line); }
        return e;
    }

    private Expr ParseUnary()
    {
        if (!IsOp("-")) return ParsePostfix(ParsePrimary());
        int l = Next().Line;
        return new UnaryExpr("-", ParseUnary(), l);
    }

    private Expr ParsePrimary()
    {
        var t = Next();
        switch (t.Kind)
        {
            case Kind.Integer: return new LiteralExpr(long.Parse(t.Value), t.Line);
            case Kind.String:
                var s = t.Value;
                while (Peek.Kind == Kind.String) s += Next().Value; // adjacent literals concatenate, as in Python
                return new LiteralExpr(s, t.Line);
            case Kind.Name:
                return t.Value switch
                {
                    "true" or "True" => new LiteralExpr(true, t.Line),
                    "false" or "False" => new LiteralExpr(false, t.Line),
                    "none" or "None" => new LiteralExpr(null, t.Line),
                    _ => new NameExpr(t.Value, t.Line),
                };
            case Kind.Op when t.Value == "(":
                var inner = ParseExpression();
                if (IsOp(",")) throw Error("unsupported tuple");
                Expect(Kind.Op, ")");
                return inner;
            case Kind.Op when t.Value == "[":
                var items = new List<Expr>();
                while (!IsOp("]")) { items.Add(ParseExpression()); if (!IsOp("]")) Expect(Kind.Op, ","); }
                _pos++;
                return new ListExpr(items, t.Line);
            default: throw new ChatTemplateException($"unexpected '{t.Value}' at line {t.Line}");
        }
    }

    private Expr ParsePostfix(Expr e)
    {
        while (true)
        {
            int l = Peek.Line;
            if (IsOp(".")) { _pos++; e = new AttrExpr(e, ExpectName(), l); }
            else if (IsOp("[")) { _pos++; e = ParseSubscript(e, l); }
            else if (IsOp("(")) { _pos++; e = new CallExpr(e, ParseArgs(), l); }
            else if (IsOp("|"))
            {
                _pos++;
                var name = ExpectName();
                List<Expr> args = [];
                if (IsOp("(")) { _pos++; args = ParseArgs(); }
                e = new FilterExpr(e, name, args, l);
            }
            else if (IsName("is"))
            {
                _pos++;
                bool negated = IsName("not");
                if (negated) _pos++;
                e = new TestExpr(e, ExpectName(), negated, l);
            }
            else return e;
        }
    }

    private Expr ParseSubscript(Expr target, int line)
    {
        Expr? start = IsOp(":") ? null : ParseExpression();
        if (IsOp("]")) { _pos++; return new ItemExpr(target, start!, line); }
        Expect(Kind.Op, ":");
        Expr? stop = IsOp("]") || IsOp(":") ? null : ParseExpression();
        if (IsOp(":")) throw Error("unsupported slice step");
        Expect(Kind.Op, "]");
        return new SliceExpr(target, start, stop, line);
    }

    private List<Expr> ParseArgs()
    {
        var args = new List<Expr>();
        while (!IsOp(")"))
        {
            if (Peek.Kind == Kind.Name && _tokens[_pos + 1] is { Kind: Kind.Op, Value: "=" })
                throw Error("unsupported keyword argument");
            args.Add(ParseExpression());
            if (!IsOp(")")) Expect(Kind.Op, ",");
        }
        _pos++;
        return args;
    }
}

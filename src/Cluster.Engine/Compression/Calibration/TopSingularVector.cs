namespace Cluster.Engine.Compression.Calibration;

/// <summary>
/// The first right singular vector of a tall matrix A [rows, cols] (cols small, e.g. a head dimension):
/// the top eigenvector of the Gram matrix AᵀA, found with cyclic Jacobi rotations in double precision
/// (Golub and Van Loan, section 8.5). Exact to round-off and dependency-free; AᵀA squares the condition
/// number, which only matters for the trailing singular vectors that Q-Filters does not use.
/// </summary>
public static class TopSingularVector
{
    /// <summary>v [cols] with ||v|| = 1 (sign arbitrary) and σ₁ = ||A v||.</summary>
    public static (double[] Vector, double SingularValue) Compute(ReadOnlySpan<float> a, int rows, int cols)
    {
        if (a.Length != rows * cols) throw new ArgumentException($"matrix holds {a.Length} values, expected {rows}x{cols}", nameof(a));
        var g = new double[cols, cols];
        for (int r = 0; r < rows; r++)
        {
            var row = a.Slice(r * cols, cols);
            for (int i = 0; i < cols; i++)
            {
                double x = row[i];
                for (int j = i; j < cols; j++) g[i, j] += x * row[j];
            }
        }
        for (int i = 0; i < cols; i++)
            for (int j = 0; j < i; j++) g[i, j] = g[j, i];
        var (values, vectors) = JacobiEigen(g);
        int best = 0;
        for (int i = 1; i < cols; i++) if (values[i] > values[best]) best = i;
        var v = new double[cols];
        for (int i = 0; i < cols; i++) v[i] = vectors[i, best];
        return (v, Math.Sqrt(Math.Max(0, values[best])));
    }

    /// <summary>Eigenvalues and eigenvectors (columns) of a symmetric matrix.</summary>
    private static (double[] Values, double[,] Vectors) JacobiEigen(double[,] m)
    {
        int n = m.GetLength(0);
        var a = (double[,])m.Clone();
        var v = new double[n, n];
        for (int i = 0; i < n; i++) v[i, i] = 1;
        for (int sweep = 0; sweep < 100; sweep++)
        {
            double off = 0, scale = 0;
            for (int i = 0; i < n; i++)
            {
                scale += a[i, i] * a[i, i];
                for (int j = i + 1; j < n; j++) off += a[i, j] * a[i, j];
            }
            if (off <= 1e-30 * Math.Max(scale, 1e-300)) break;
            for (int p = 0; p < n; p++)
                for (int q = p + 1; q < n; q++)
                {
                    if (a[p, q] == 0) continue;
                    // Zero a[p, q] with the rotation angle of the symmetric Schur decomposition.
                    double theta = (a[q, q] - a[p, p]) / (2 * a[p, q]);
                    double t = Math.Sign(theta == 0 ? 1 : theta) / (Math.Abs(theta) + Math.Sqrt(theta * theta + 1));
                    double c = 1 / Math.Sqrt(t * t + 1), s = t * c;
                    for (int k = 0; k < n; k++)
                    {
                        double akp = a[k, p], akq = a[k, q];
                        a[k, p] = c * akp - s * akq;
                        a[k, q] = s * akp + c * akq;
                    }
                    for (int k = 0; k < n; k++)
                    {
                        double apk = a[p, k], aqk = a[q, k];
                        a[p, k] = c * apk - s * aqk;
                        a[q, k] = s * apk + c * aqk;
                    }
                    for (int k = 0; k < n; k++)
                    {
                        double vkp = v[k, p], vkq = v[k, q];
                        v[k, p] = c * vkp - s * vkq;
                        v[k, q] = s * vkp + c * vkq;
                    }
                }
        }
        var values = new double[n];
        for (int i = 0; i < n; i++) values[i] = a[i, i];
        return (values, v);
    }
}

/// Text for a terminal line.
public enum TerminalText {
    /// "label 42% item" in fewer than `width` columns (the last column stays
    /// free, so the line never wraps): the middle of a long item is replaced
    /// by "...", and the label alone is cut when even that does not fit.
    public static func fitted(_ prefix: String, _ item: String, width: Int) -> String {
        let room = max(0, width - 1)
        let line = item.isEmpty ? prefix : prefix + " " + item
        guard line.count > room else { return line }
        let itemRoom = room - prefix.count - 1
        guard itemRoom >= 5 else { return String(prefix.prefix(room)) }
        let kept = itemRoom - 3
        return prefix + " " + item.prefix(kept - kept / 2) + "..." + item.suffix(kept / 2)
    }
}

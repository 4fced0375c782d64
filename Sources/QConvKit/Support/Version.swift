/// The qconv release, written into every container header and printed by the CLI's version option.
public enum QConvVersion {
    public static let string = "0.1.0"
}

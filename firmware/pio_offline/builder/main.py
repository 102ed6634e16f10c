# SCons builder of the tinyds offline test platform: the system's arm-none-eabi
# toolchain, the board's CPU flags, and PlatformIO's own BuildProgram().
from SCons.Script import Default, DefaultEnvironment

env = DefaultEnvironment()
cpu = ["-mthumb", "-mcpu=%s" % env.BoardConfig().get("build.cpu")]

env.Replace(
    AR="arm-none-eabi-ar", AS="arm-none-eabi-as", CC="arm-none-eabi-gcc",
    CXX="arm-none-eabi-g++", OBJCOPY="arm-none-eabi-objcopy", RANLIB="arm-none-eabi-ranlib",
    SIZETOOL="arm-none-eabi-size", ARFLAGS=["rc"], PROGSUFFIX=".elf",
    SIZEPRINTCMD="$SIZETOOL -B -d $SOURCES",
)
env.Append(
    ASFLAGS=cpu,
    CCFLAGS=cpu + ["-ffunction-sections", "-fdata-sections"],
    LINKFLAGS=cpu + ["-Wl,--gc-sections"],
)

elf = env.BuildProgram()
Default(env.Alias("size", elf, env.VerboseAction("$SIZEPRINTCMD", "Size $SOURCE")))

# zsh -f capture.zsh FPATH_DIR 'line to complete': prints each candidate the completion offers,
# one per line as <<candidate>>. Drives an interactive zsh on a pseudo-terminal (zpty), typing
# the line and a Tab, and waits for each prompt, and for the end of the completion, before
# typing on (zsh drops a completion when typed input is already waiting).
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT='READY> '"
zpty -r z out '*READY> '
zpty -w z "fpath=($1 \$fpath); autoload -U compinit; compinit -u -D"
zpty -r z out '*READY> '
zpty -w z 'compadd() { builtin compadd "$@"; (( ${@[(I)-[OAD]]} )) && return; local -a m; builtin compadd -O m "$@"; print -rl -- "<<"${^m}">>" }; comppostfuncs=(_captured); _captured() { print -r -- "<<"END">>" }'
zpty -r z out '*READY> '
zpty -w -n z "$2"$'\t'
zpty -r z out '*<<END>>*'
print -r -- "$out"
zpty -d z

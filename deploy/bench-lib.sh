# Shell helpers shared by the deploy/bench-*.sh scripts: source it, don't run it.
# now: nanoseconds; median: of the numbers on stdin; ratio A B: A/B to 3 places;
# time_it CMD...: runs CMD and prints its wall time in ms.
now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a/b}'; }
time_it() { local s e; s=$(now); "$@"; e=$(now); echo $(( (e - s) / 1000000 )); }

"""Template sentences of the demo corpus's `template` subset (the whole corpus before the free-sentence subset was added).

Templates (60 zh, 60 en, 40 code-switched) x entity lists (people, places, companies, technical
terms, times). Dev/test template sentences are new combinations of templates and entities that
also occur in train; they are reported separately from the free-form (unseen-structure) subset.
"""

# ----------------------------------------------------------------------------- entity lists
ZH_PEOPLE = [
    "张伟", "王芳", "李娜", "刘洋", "陈静", "杨帆", "赵磊", "黄丽", "周杰", "吴敏", "徐强", "孙悦",
    "马超", "朱琳", "胡军", "郭涛", "何平", "高明", "林峰", "罗欣", "郑凯", "梁晨", "谢婷", "宋佳",
    "唐亮", "韩雪", "冯刚", "曹阳", "彭博", "曾华", "田甜", "董梅", "袁飞", "潘雨", "蒋文", "余浩",
    "杜鹏", "叶青", "魏东", "苏婉",
]
ZH_CITIES = [
    "北京", "上海", "杭州", "深圳", "广州", "成都", "重庆", "南京", "武汉", "西安", "苏州", "天津",
    "长沙", "郑州", "青岛", "厦门", "大连", "沈阳", "哈尔滨", "昆明", "贵阳", "南宁", "合肥", "济南",
    "福州", "宁波", "无锡", "兰州", "乌鲁木齐", "拉萨", "香港", "澳门",
]
ZH_COMPANIES = [
    "阿里巴巴", "腾讯", "华为", "百度", "字节跳动", "小米", "京东", "美团", "网易", "拼多多", "滴滴",
    "联想", "比亚迪", "海尔", "格力", "中兴", "大疆", "蔚来", "理想汽车", "招商银行", "中国移动",
    "中国银行", "顺丰", "携程", "快手",
]
ZH_TECH = [
    "人工智能", "机器学习", "深度学习", "语音识别", "神经网络", "大模型", "数据库", "服务器", "云计算",
    "区块链", "自动驾驶", "芯片", "操作系统", "编程语言", "推荐算法", "搜索引擎", "机器翻译", "图像识别",
    "自然语言处理", "知识图谱", "强化学习", "量子计算", "物联网", "网络安全", "数据中心", "分布式系统",
    "虚拟现实", "计算机视觉", "语音合成", "边缘计算",
]
ZH_TIMES = [
    "明天", "后天", "今天下午", "明天上午", "下周一", "下周三", "周五晚上", "这个周末", "下个月",
    "今天晚上", "月底", "年底之前", "早上八点", "中午", "下午三点", "晚上七点", "星期二", "下周末",
    "明天早上", "下午",
]
EN_PEOPLE = [
    "Alice", "Bob", "Charlie", "David", "Emma", "Frank", "Grace", "Henry", "Isabella", "Jack", "Kevin",
    "Laura", "Michael", "Nancy", "Oliver", "Patricia", "Rachel", "Samuel", "Thomas", "Victoria",
    "William", "Sophia", "Daniel", "Olivia", "James", "Emily", "Benjamin", "Chloe", "Lucas", "Hannah",
    "Ethan", "Natalie", "Ryan", "Julia", "Andrew", "Megan", "Jessica", "Brian", "Sarah", "Peter",
]
EN_CITIES = [
    "London", "Paris", "Berlin", "Tokyo", "Seattle", "Boston", "Chicago", "Toronto", "Sydney",
    "Singapore", "Amsterdam", "Madrid", "Dublin", "Zurich", "Vienna", "Munich", "Austin", "Denver",
    "Vancouver", "Melbourne", "San Francisco", "New York", "Los Angeles", "Stockholm", "Oslo",
    "Barcelona", "Edinburgh", "Lisbon", "Prague", "Helsinki",
]
EN_COMPANIES = [
    "Google", "Microsoft", "Amazon", "Apple", "Nvidia", "Intel", "Meta", "Netflix", "Tesla", "IBM",
    "Oracle", "Salesforce", "Adobe", "Samsung", "Sony", "Spotify", "Uber", "Airbnb", "OpenAI",
    "Alibaba", "Tencent", "Huawei", "Siemens", "Philips", "Shopify",
]
EN_TECH = [
    "Kubernetes", "PyTorch", "TensorFlow", "Docker", "Python", "JavaScript", "TypeScript", "Linux",
    "GitHub", "Redis", "Kafka", "PostgreSQL", "MongoDB", "React", "Android", "JAX", "CUDA",
    "Terraform", "Jenkins", "Elasticsearch", "Spark", "Hadoop", "Rust", "Golang", "Swift", "Kotlin",
    "GraphQL", "Nginx", "Ubuntu", "Ansible", "Prometheus", "Grafana", "Jupyter", "WebAssembly",
]
EN_TIMES = [
    "Friday", "Monday", "Tuesday", "Wednesday", "Thursday", "Saturday", "Sunday", "tomorrow",
    "tonight", "next week", "next month", "this weekend", "tomorrow morning", "Monday morning",
    "Friday afternoon", "the end of the month", "noon", "next Tuesday", "this afternoon",
    "Thursday evening",
]

# slot name -> (filler list, is a hotword category)
SLOTS = {
    "pz": (ZH_PEOPLE, True), "cz": (ZH_CITIES, True), "oz": (ZH_COMPANIES, True), "tz": (ZH_TECH, True),
    "dz": (ZH_TIMES, False), "pe": (EN_PEOPLE, True), "ce": (EN_CITIES, True),
    "oe": (EN_COMPANIES, True), "te": (EN_TECH, True), "de": (EN_TIMES, False),
}

# ----------------------------------------------------------------------------- templates
# (family, template); a digit after the slot name asks for a second, different filler.
ZH_TEMPLATES = [
    ("places", "{pz}{dz}去{cz}参加{oz}的会议"), ("names", "请{pz}把{tz}的报告发给{pz2}"),
    ("names", "{pz}和{pz2}{dz}一起吃饭"), ("names", "我{dz}要给{pz}打电话"),
    ("companies", "{pz}是{oz}的工程师"), ("places", "{pz}在{cz}工作了三年"),
    ("places", "{pz}{dz}要去{cz}出差"), ("companies", "你认识{oz}的{pz}吗"),
    ("tech", "{pz}负责{tz}项目"), ("names", "请通知{pz}{dz}开会"),
    ("places", "{pz}的航班{dz}到达{cz}"), ("companies", "{oz}在{cz}开了新的办公室"),
    ("tech", "{oz}发布了新的{tz}产品"), ("tech", "{oz}正在招聘{tz}工程师"),
    ("tech", "我们{dz}讨论{tz}的问题"), ("places", "{cz}的天气怎么样"),
    ("places", "从{cz}到{cz2}要多长时间"), ("places", "我想订一张去{cz}的机票"),
    ("meeting", "{dz}的会议改到{cz}举行"), ("tech", "{pz}推荐我学习{tz}"),
    ("tech", "{tz}是未来的发展方向"), ("companies", "{oz}和{oz2}达成了合作"),
    ("companies", "{oz}的股价今天上涨了"), ("companies", "{pz}加入了{oz}的研究团队"),
    ("names", "这份{tz}报告由{pz}完成"), ("names", "{pz}{dz}在{cz}做演讲"),
    ("places", "帮我查一下{cz}的酒店"), ("companies", "请把文件发给{oz}的{pz}"),
    ("tech", "{pz}说{tz}很有意思"), ("tech", "{oz}在{tz}方面投入很大"),
    ("tech", "我们团队正在研究{tz}"), ("names", "{pz}的生日是{dz}"),
    ("places", "{pz}在{cz}买了房子"), ("places", "{cz}有很多好吃的"),
    ("places", "{pz}想去{cz}旅游"), ("companies", "{oz}的总部在{cz}"),
    ("names", "{pz}问{pz2}什么时候有空"), ("names", "提醒我{dz}联系{pz}"),
    ("places", "{pz}{dz}回{cz}"), ("companies", "{oz}的新手机很受欢迎"),
    ("tech", "老师讲了{tz}的基本原理"), ("tech", "这门课主要介绍{tz}"),
    ("names", "{pz}和{pz2}在{oz}认识"), ("places", "{cz}的地铁很方便"),
    ("meeting", "请帮我预约{dz}的会议室"), ("meeting", "{pz}{dz}要交项目报告"),
    ("meeting", "我们和{oz}{dz}开视频会议"), ("places", "{pz}请了三天假去{cz}"),
    ("companies", "{oz}的年会在{cz}举办"), ("tech", "{pz}是{tz}方面的专家"),
    ("tech", "我们需要更多{tz}的数据"), ("places", "{pz}今年考上了{cz}的大学"),
    ("tech", "{oz}推出了基于{tz}的服务"), ("meeting", "{pz}把会议推迟到{dz}"),
    ("meeting", "请{pz}准备{dz}的材料"), ("companies", "{oz}的客服电话打不通"),
    ("places", "{pz}每天坐高铁去{cz}上班"), ("meeting", "大家{dz}在{cz}见面"),
    ("tech", "{pz}发现了{tz}系统的问题"), ("companies", "{pz}和{oz}签了合同"),
]
EN_TEMPLATES = [
    ("names", "Please send the {te} report to {pe} before {de}"), ("places", "{pe} is flying to {ce} next week"),
    ("companies", "{pe} works as an engineer at {oe}"), ("tech", "We use {te} to train our models"),
    ("names", "Can you ask {pe} to call me before {de}"), ("meeting", "The meeting with {oe} has moved to {de}"),
    ("companies", "{oe} is opening a new office in {ce}"), ("tech", "{pe} and {pe2} will present the {te} demo"),
    ("places", "How is the weather in {ce} today"), ("places", "Book a flight from {ce} to {ce2}"),
    ("tech", "{oe} just released a new version of {te}"), ("tech", "Our team migrated the service to {te}"),
    ("tech", "{pe} fixed the {te} bug last night"), ("names", "Remind me to email {pe} by {de}"),
    ("places", "{pe} moved from {ce} to {ce2} last year"), ("tech", "The {te} cluster went down again this morning"),
    ("companies", "{oe} signed a contract with {oe2}"), ("tech", "{pe} gave a great talk about {te} in {ce}"),
    ("places", "I need a hotel in {ce} for three nights"), ("companies", "{pe} will join {oe} as a data scientist"),
    ("tech", "Please review the {te} pull request before {de}"), ("places", "{pe} is the new manager of the {ce} office"),
    ("places", "The conference in {ce} starts next month"), ("companies", "{oe} hired {pe} to lead the {te} team"),
    ("meeting", "Let us schedule a call with {pe} for {de}"), ("tech", "{pe} recommended learning {te} first"),
    ("tech", "Our {te} pipeline needs more memory"), ("names", "{pe} and {pe2} had lunch in {ce}"),
    ("companies", "The stock price of {oe} went up today"), ("companies", "{oe} is hiring {te} developers in {ce}"),
    ("names", "Send the slides to {pe} and {pe2}"), ("places", "{pe} is driving from {ce} to {ce2}"),
    ("tech", "We should upgrade {te} before {de}"), ("tech", "{pe} wrote the documentation for {te}"),
    ("companies", "The {oe} team will visit us before {de}"), ("places", "{pe} is on vacation in {ce}"),
    ("tech", "Ask {pe} whether the {te} tests passed"), ("companies", "{oe} and {oe2} are competing in the cloud market"),
    ("places", "My flight to {ce} was delayed by two hours"), ("tech", "{pe} organized a workshop on {te}"),
    ("meeting", "Please tell {pe} that the meeting is canceled"), ("meeting", "{pe} will finish the report by {de}"),
    ("tech", "We deployed the new {te} version yesterday"), ("companies", "{oe} bought a small startup in {ce}"),
    ("places", "{pe} grew up in {ce}"), ("companies", "Could you introduce me to {pe} from {oe}"),
    ("tech", "The {te} server in {ce} is very slow"), ("tech", "{pe} prefers {te} over {te2}"),
    ("places", "The train to {ce} leaves at noon"), ("names", "{pe} called {pe2} about the budget"),
    ("meeting", "Let us meet {pe} at the {oe} office"), ("tech", "{pe} is writing a book about {te}"),
    ("companies", "{oe} reported strong sales in {ce}"), ("meeting", "Please move my appointment to {de}"),
    ("names", "{pe} lost the keys to the {ce} apartment"), ("companies", "The new {oe} phone is very popular"),
    ("tech", "{pe} teaches {te} at the university"), ("places", "Our office in {ce} will be closed on Monday"),
    ("places", "{pe} and {pe2} are planning a trip to {ce}"), ("tech", "Tell {pe} to check the {te} logs before {de}"),
]
CS_TEMPLATES = [
    ("tech", "我们用{te}训练模型"), ("places", "{pz}明天去{ce}参加{oe}的会议"),
    ("names", "请把{te}的report发给{pe}"), ("tech", "这个bug要在{te}上修复"),
    ("companies", "{pz}在{oe}做{te}开发"), ("tech", "我们的服务已经迁移到{te}了"),
    ("places", "{pe}下周来{cz}开会"), ("tech", "{oe}发布了新的{te}版本"),
    ("companies", "帮我约一下{oe}的{pe}"), ("tech", "这个{te}的demo做得很好"),
    ("names", "{pz}的presentation讲得很清楚"), ("meeting", "我们{dz}和{oe}开一个meeting"),
    ("tech", "请大家review一下{te}的代码"), ("tech", "{pz}在学习{te}和{te2}"),
    ("companies", "{oe}在{cz}有一个很大的团队"), ("meeting", "这个feature{dz}上线"),
    ("names", "{pe}是我们的project manager"), ("tech", "我把{te}的文档发到群里了"),
    ("companies", "{pz}拿到了{oe}的offer"), ("names", "今天的deadline是{pe}定的"),
    ("tech", "{te}的性能比{te2}好"), ("places", "{pz}在{ce}读书"),
    ("tech", "我们用{te}部署这个服务"), ("companies", "{oe}的面试有三轮"),
    ("names", "请{pe}把slides发给我"), ("tech", "这个model在{te}上跑得很快"),
    ("names", "{pz}和{pe}一起写了这篇paper"), ("meeting", "{dz}的call取消了"),
    ("companies", "{pz}负责{oe}的项目"), ("tech", "我们需要一个懂{te}的工程师"),
    ("places", "{pe}刚从{ce}回来"), ("companies", "{oe}和{oz}在{cz}合作"),
    ("tech", "这个{te}的API很好用"), ("tech", "{pz}在{te}上提交了代码"),
    ("places", "我下周要去{ce}见{pe}"), ("tech", "请用{te}重新跑一下实验"),
    ("companies", "{oe}的app最近更新了"), ("tech", "{pz}建议我们用{te}"),
    ("meeting", "会议的summary请发给{pe}"), ("places", "{pz}{dz}在{ce}的{oe}办公室"),
]
TEMPLATES = {"zh": ZH_TEMPLATES, "en": EN_TEMPLATES, "cs": CS_TEMPLATES}
